"""A raw ASGI app that takes its time to answer `/slow` (for tests/test_connections.py: a slow
response must not be cut by the server's head or body read deadlines)."""

from __future__ import annotations

import asyncio
from typing import Any

SLOW_SECONDS = 1.5


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(SLOW_SECONDS)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def create_app() -> Any:
    return app
