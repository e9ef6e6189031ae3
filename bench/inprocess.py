"""The app driven in-process, without HTTP: concurrent requests straight into the ASGI app on one
uvloop event loop, for profiling and A/B comparisons of the service's own cost (no uvicorn, no
wrk, no sockets). Prints requests/s and CPU per request: the whole process's, and the event
loop thread's alone (the rest is the writer's helper thread).

    .venv/bin/python bench/inprocess.py record            # 16 concurrent assessment POSTs
    .venv/bin/python bench/inprocess.py record --key      # with a new Idempotency-Key each
    .venv/bin/python bench/inprocess.py score --requests 20000
    .venv/bin/python bench/inprocess.py bare              # bench/bare_app.py's endpoint
    .venv/bin/python bench/inprocess.py record --db postgresql

Wall-clock figures on a shared machine move by a quarter between identical runs: alternate the
two versions being compared (a `git worktree` of the other one, run with its own copy of this
file), or count instructions, which move by about 1.5 %. Run under valgrind twice, with two
request counts, and divide the difference by the extra requests (start-up and warm-up cancel):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/inprocess.py score --requests 400    # "Collected : <n>"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from starlette.types import ASGIApp, Message

from bench.common import SCORE_BODY, assessment_body
from tests.conftest import make_settings
from tests.dbs import empty_database, migrate

WARM_UP_PER_CLIENT = 50


async def call(
    app: ASGIApp, method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One request through the ASGI interface, as a server would make it."""
    raw = b"" if body is None else json.dumps(body).encode()
    head = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in headers.items()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": head,
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def _run(args: argparse.Namespace, url: str, data_dir: Path) -> None:
    from app.main import create_app

    settings = make_settings(url, data_dir, rate_limit_per_minute=0, gc_freeze=True)
    service = create_app(settings)
    async with service.router.lifespan_context(service):
        key = (data_dir / "admin-api-key.txt").read_text().strip()
        headers = {"authorization": f"Bearer {key}"}
        patient = {"identifiers": [{"system": "https://bench.example/subject", "value": "p"}]}
        status, answer = await call(service, "POST", "/v1/patients", patient, headers)
        assert status == 201, answer
        patient_id = json.loads(answer)["id"]
        target: ASGIApp = service
        if args.endpoint == "bare":
            from bench.bare_app import create_app as bare_app

            target = bare_app()
        counter = iter(range(10**12))

        async def one() -> None:
            n = next(counter)
            sent = dict(headers)
            if args.key:
                sent["idempotency-key"] = f"inprocess-{n}"
            if args.endpoint == "record":
                path, body, expected = (
                    f"/v1/patients/{patient_id}/assessments",
                    assessment_body(n % 20000 + 1),
                    201,
                )
            else:
                path = "/bare" if args.endpoint == "bare" else "/v1/scores/pasi"
                body, expected = SCORE_BODY, 200
            status, answer = await call(target, "POST", path, body, sent)
            assert status == expected, answer

        def clients(per_client: int) -> list[Coroutine[Any, Any, None]]:
            async def client() -> None:
                for _ in range(per_client):
                    await one()

            return [client() for _ in range(args.concurrency)]

        await asyncio.gather(*clients(WARM_UP_PER_CLIENT))
        per_client = max(1, args.requests // args.concurrency)
        measured = await _measured(lambda: asyncio.gather(*clients(per_client)))
        seconds, process_cpu, loop_cpu = measured
        n = per_client * args.concurrency
        print(
            f"{args.endpoint}{' with key' if args.key else ''} on {args.db}: {n / seconds:.0f} "
            f"req/s, CPU {process_cpu / n * 1000:.3f} ms/req "
            f"(event loop {loop_cpu / n * 1000:.3f} ms/req)"
        )


async def _measured(
    work: Callable[[], Coroutine[Any, Any, Any] | asyncio.Future[Any]],
) -> tuple[float, float, float]:
    """Wall seconds, process CPU seconds and this (the event loop's) thread's CPU seconds."""

    def process_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    wall, cpu, loop = time.perf_counter(), process_cpu(), time.thread_time()
    await work()
    return time.perf_counter() - wall, process_cpu() - cpu, time.thread_time() - loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", choices=["record", "score", "bare"])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--key", action="store_true", help="a new Idempotency-Key per request")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, empty_database(args.db, Path(tmp)) as url:
        migrate(url)
        uvloop.run(_run(args, url, Path(tmp)))


if __name__ == "__main__":
    main()
