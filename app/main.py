"""The application factory: routers, error handlers, middleware, and the database in app state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import IntegrityError

from app import logging_filters
from app.api import admin, assessments, health, outcomes, patients, scores, treatments
from app.api.body_guard import BodyGuard
from app.api.deps import KeyCache, RateLimiter
from app.api.headers import SecurityHeaders
from app.api.problems import install_problem_handlers
from app.db.database import Database
from app.db.migrate import upgrade_to_head
from app.services.api_keys import BOOTSTRAP_KEY_FILE, bootstrap_admin_key
from app.settings import Settings, get_settings

log = logging.getLogger("app")

DESCRIPTION = """
Scores psoriasis severity (PASI, BSA, IGA/sPGA, PGA×BSA, DLQI) and follows patients over
time: change since baseline, PASI 50/75/90/100 responses, time to clearance, relapse and
rebound.

**Authorize** with an API key (`pss_...`): on the first start the service writes an admin key
to `data/admin-api-key.txt`; create more with `psoriasis-keys create`.

Errors are RFC 9457 problem details (`application/problem+json`).
"""


def _announce_startup(app: FastAPI, settings: Settings, db: Database) -> None:
    if settings.auth_disabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): anyone who can reach this port "
            "can read and change patient data. Never run like this outside development."
        )
        return
    try:
        token = bootstrap_admin_key(db, settings.data_dir)
    except IntegrityError:  # another worker created it first
        token = None
    if token is not None:
        path = settings.data_dir / BOOTSTRAP_KEY_FILE
        print(
            f"\n  First start: created an admin API key (also written to {path}, mode 600):\n"
            f"    {token}\n  Use it as 'Authorization: Bearer <key>'; it is not shown again.\n",
            flush=True,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.effective_database_url
        if settings.migrate_on_start and url.startswith("sqlite"):
            upgrade_to_head(url, settings.data_dir)
        db = Database(url)
        app.state.db = db
        _announce_startup(app, settings, db)
        try:
            yield
        finally:
            db.dispose()

    app = FastAPI(
        title="Psoriasis severity scoring service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        license_info={"name": "MIT"},
    )
    logging_filters.install()
    app.state.settings = settings
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    install_problem_handlers(app)
    for module in (health, scores, patients, assessments, treatments, outcomes, admin):
        app.include_router(module.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key"],
            expose_headers=["ETag", "Location", "Retry-After"],
        )
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app


app = create_app()
