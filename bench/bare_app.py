"""The comparison baseline: a bare FastAPI app with one trivial JSON POST endpoint.

It takes a body of the same size and shape as POST /v1/scores/pasi (bench.load sends the very
same bytes) and answers a small JSON object. No validation model, no auth, no database: this is
what FastAPI + uvicorn (uvloop, httptools) cost on this machine, the ceiling the service is
compared against.

    uvicorn --factory bench.bare_app:create_app --loop uvloop --http httptools
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


async def bare(body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "fields": len(body)}


def create_app() -> FastAPI:
    """A factory, as the service is, so both run under the very same uvicorn command."""
    app = FastAPI(title="bare", openapi_url=None, docs_url=None, redoc_url=None)
    app.post("/bare")(bare)
    return app
