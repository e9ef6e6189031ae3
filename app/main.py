"""The application factory, served with `uvicorn --factory app.main:create_app`: routers, error
handlers, middleware, and the runtime (database, key cache, rate limiter) built by the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app import logging_filters
from app.api.context import audit_refusal
from app.api.docs import install_docs
from app.api.lean_route import add_routes
from app.api.middleware import BodyGuard, SecurityHeaders
from app.api.problems import install_problem_handlers
from app.api.routes import (
    admin,
    assessments,
    batch,
    charts,
    cohorts,
    exports,
    fhir,
    health,
    outcomes,
    patients,
    scores,
    treatments,
)
from app.api.state import Runtime
from app.auth.guards import KeyCache, RateLimiter
from app.db.database import Database
from app.db.migrate import upgrade_to_head
from app.services.api_keys import BOOTSTRAP_KEY_FILE, bootstrap_admin_key
from app.services.idempotency import purge_expired
from app.services.outcomes_cache import BytesCache
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


def _announce_startup(settings: Settings, db: Database) -> None:
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


async def _purge_idempotency_keys(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """Forget idempotency keys older than their retention, every `IDEMPOTENCY_PURGE_SECONDS`
    (each worker does it; the DELETE is idempotent, so several workers doing it is harmless).
    It stops between purges, never during one, so the database is disposed of only after."""
    retention = timedelta(hours=settings.idempotency_retention_hours)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.idempotency_purge_seconds)
        if stop.is_set():
            return
        try:
            await run_in_threadpool(purge_expired, db, retention)
        except Exception as exc:  # a failed purge must not stop the service; retry next time
            log.warning("idempotency key purge failed: %s", type(exc).__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.effective_database_url
        if settings.migrate_on_start and url.startswith("sqlite"):
            upgrade_to_head(url, settings.data_dir)
        db = Database(
            url,
            settings.sqlite_group_commit_max
            if url.startswith("sqlite")
            else settings.postgres_group_commit_max,
        )
        app.state.runtime = Runtime(
            settings=settings,
            db=db,
            key_cache=KeyCache(settings.auth_cache_seconds),
            rate_limiter=RateLimiter(settings.rate_limit_per_minute),
            failed_auth_limiter=RateLimiter(
                settings.failed_auth_per_minute, what="failed authentications from this address"
            ),
            outcomes_cache=BytesCache(settings.outcomes_cache_bytes),
        )
        _announce_startup(settings, db)
        if settings.gc_freeze:
            gc.collect()
            gc.freeze()
        stop_purging = asyncio.Event()
        purger = asyncio.create_task(_purge_idempotency_keys(db, settings, stop_purging))
        try:
            yield
        finally:
            stop_purging.set()
            await purger
            db.dispose()

    app = FastAPI(
        title="Psoriasis severity scoring service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        license_info={"name": "MIT"},
        docs_url=None,  # served from local assets by app.api.docs
        redoc_url=None,
        # No automatic trailing-slash redirects: they answered with a Location built from the
        # request's Host header (an open redirect on a misconfigured proxy); `/x/` is a 404.
        redirect_slashes=False,
        # The service exports no OpenTelemetry; switched off, FastAPI skips asking the global
        # providers whether anyone listens, on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    logging_filters.install()
    install_problem_handlers(app, audit_refusal)
    install_docs(app)
    routers = (
        health,
        scores,
        patients,
        batch,
        assessments,
        treatments,
        outcomes,
        cohorts,
        charts,
        admin,
        fhir,
        exports,
    )
    for module in routers:
        add_routes(app, module.router)
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
