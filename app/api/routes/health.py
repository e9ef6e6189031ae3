"""Liveness and readiness probes (no authentication: they reveal nothing)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.auth import DbDep
from app.api.lean_route import LeanRoute
from app.api.problems import problem_response
from app.schemas.common import Problem
from app.services.health import database_reachable

router = APIRouter(route_class=LeanRoute, tags=["health"])


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
    if not database_reachable(db):
        return problem_response(
            503, "database-unavailable", "Database unavailable", "the database is not reachable"
        )
    return Health(status="ready")
