#!/bin/sh
# Container entrypoint for psoriasis-scoring.
#
# With arguments, run them instead of the server, e.g.
#   docker run IMAGE alembic current
# Without arguments, apply database migrations, then replace this shell with
# uvicorn so it runs as PID 1 and receives SIGTERM directly.
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

alembic upgrade head

exec uvicorn --factory app.main:create_app \
    --host 0.0.0.0 \
    --port "${PORT:-8000}" \
    --workers "${WEB_CONCURRENCY:-2}" \
    --loop uvloop \
    --http app.server:BoundedHttpToolsProtocol \
    --timeout-keep-alive 5 \
    --limit-concurrency 100 \
    --proxy-headers
