"""Liveness and readiness probes (no authentication: they reveal nothing)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from app.api.deps import DbDep
from app.api.problems import problem_response
from app.schemas.common import Problem

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", summary="The process is up", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="The database is reachable",
    response_model=Health,
    responses={503: {"model": Problem, "description": "Database unreachable"}},
)
def readyz(db: DbDep) -> Any:
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        return problem_response(
            503, "database-unavailable", "Database unavailable", "the database is not reachable"
        )
    return Health(status="ready")
