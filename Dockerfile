# syntax=docker/dockerfile:1
#
# psoriasis-scoring HTTP service.
#
# Runtime configuration (environment):
#   DATABASE_URL     SQLAlchemy URL (default: SQLite file in the /app/data volume)
#   PORT             listen port (default 8000)
#   WEB_CONCURRENCY  uvicorn worker processes (default 2)
#   HTTP_MAX_HEADER_BYTES, HTTP_HEADER_TIMEOUT_SECONDS, HTTP_BODY_TIMEOUT_SECONDS
#                    connection limits (16384 bytes, 10 s, 30 s; README "Connection limits");
#                    the entrypoint adds uvicorn's --timeout-keep-alive 5 and
#                    --limit-concurrency 100 (per worker)
#
# Mount persistent storage at /app/data when using the default SQLite URL.
# `docker run IMAGE alembic current` runs a one-off command instead of the server.

# ---------------------------------------------------------------------------
# Builder: install the project and its dependencies into a virtualenv.
# All dependencies ship manylinux wheels for CPython 3.11, so no compiler is needed.
# ---------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.md is referenced by pyproject.toml ([project] readme) and needed to build.
COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
RUN pip install --no-cache-dir -c constraints.txt .

# ---------------------------------------------------------------------------
# Runtime: same base image (the venv's interpreter symlinks point into it).
# ---------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    ENVIRONMENT=production \
    DATABASE_URL=sqlite:////app/data/psoriasis.db \
    PORT=8000 \
    WEB_CONCURRENCY=2

RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app \
        --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app/data \
    && chown app:app /app/data \
    && chmod 0700 /app/data

WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY --chmod=0755 docker/entrypoint.sh ./docker/entrypoint.sh

USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
