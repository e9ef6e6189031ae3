"""What the application holds while it runs, typed, in one place (`app.state.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.auth.guards import KeyCache, RateLimiter
from app.db.database import Database
from app.services.outcomes_cache import BytesCache
from app.settings import Settings


@dataclass(slots=True)
class Runtime:
    """Built by the lifespan: the database exists only while the app is serving."""

    settings: Settings
    db: Database
    key_cache: KeyCache
    rate_limiter: RateLimiter
    failed_auth_limiter: RateLimiter
    outcomes_cache: BytesCache


def runtime(request: Request) -> Runtime:
    state: Runtime = request.app.state.runtime
    return state
