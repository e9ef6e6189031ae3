"""Per-request context: the database, the authenticated caller, idempotency and audit.

Routes hand a unit of work (a function of a Session) to `RequestContext.read` or `.write`; the
context runs it in one transaction together with the audit event (and, for writes, the stored
idempotent response) and commits before the response is built.
"""

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from pydantic_core import to_json
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth.keys import ALL_SCOPES, Scope
from app.db.database import Database
from app.errors import Forbidden, InvalidInput, RateLimited, Unauthenticated
from app.services import audit, idempotency
from app.services.api_keys import Caller, verify_token
from app.services.audit import AuditInfo
from app.settings import Settings

bearer = HTTPBearer(
    auto_error=False,
    description="An API key: `Authorization: Bearer pss_...`. Create keys with `psoriasis-keys`.",
)
DEV_CALLER = Caller(None, "auth-disabled", ALL_SCOPES)
JSON_MEDIA_TYPE = "application/json"


@dataclass(slots=True)
class Answer:
    """What a unit of work produces: the body, its status and headers, and what to audit."""

    body: BaseModel | dict[str, Any]  # a dict must already be JSON-ready
    audit: AuditInfo | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def serialize(body: BaseModel | dict[str, Any]) -> str:
    if isinstance(body, BaseModel):
        return body.model_dump_json()
    return to_json(body).decode()


def json_response(status: int, body: str | bytes, headers: dict[str, str]) -> Response:
    return Response(content=body, status_code=status, media_type=JSON_MEDIA_TYPE, headers=headers)


class RateLimiter:
    """A token bucket per API key, in this worker's memory (so the limit is per worker)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(
                f"more than {self.per_minute} requests a minute for this API key",
                retry_after=max(1, int((1.0 - tokens) / rate + 0.999)),
            )
        self._buckets[key] = (tokens - 1.0, now)


class KeyCache:
    """Keys this worker verified recently: saves a database round trip (and a thread hop) on
    nearly every request. Only successful checks are kept, for `ttl` seconds."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Caller, float]] = {}

    def get(self, token: str) -> Caller | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            self._entries.pop(token, None)
            return None
        return entry[0]

    def put(self, token: str, caller: Caller) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token] = (caller, time.monotonic() + self.ttl)

    def forget(self, key_id: uuid.UUID) -> None:
        for token, (caller, _expires) in list(self._entries.items()):
            if caller.key_id == key_id:
                self._entries.pop(token, None)


def _verify(db: Database, token: str) -> Caller | None:
    with db.read() as session:
        return verify_token(session, token)


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    settings: Settings = request.app.state.settings
    if settings.auth_disabled:
        return DEV_CALLER
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("send an API key as `Authorization: Bearer <key>`")
    token = credentials.credentials
    cache: KeyCache = request.app.state.key_cache
    caller = cache.get(token)
    if caller is None:
        caller = await run_in_threadpool(_verify, request.app.state.db, token)
        if caller is None:
            raise Unauthenticated("the API key is not valid or has been revoked")
        cache.put(token, caller)
    request.app.state.rate_limiter.check(str(caller.key_id))
    return caller


def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        settings: Settings = request.app.state.settings
        if scope is Scope.SCORES and settings.scores_open and credentials is None:
            return DEV_CALLER
        caller = await authenticate(request, credentials)
        if scope not in caller.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        return caller

    dependency.__name__ = f"require_{scope.value}"
    dependency.required_scope = scope  # type: ignore[attr-defined]
    return dependency


@dataclass(slots=True)
class RequestContext:
    db: Database
    settings: Settings
    caller: Caller
    method: str
    route: str
    path: str
    idempotency_key: str | None

    def _audit(self, session: Session, info: AuditInfo | None, status: int) -> None:
        if info is not None:
            audit.record(session, self.caller.name, self.method, self.route, info, status)

    def read(self, work: Callable[[Session], Answer]) -> Response:
        with self.db.transaction() as session:
            answer = work(session)
            self._audit(session, answer.audit, answer.status)
        return json_response(answer.status, serialize(answer.body), answer.headers)

    def write(self, payload: BaseModel | None, work: Callable[[Session], Answer]) -> Response:
        if self.idempotency_key is None:
            return self.read(work)
        key = idempotency.validate_key(self.idempotency_key)
        digest = idempotency.request_hash(
            None if payload is None else payload.model_dump(mode="json")
        )
        outcome = idempotency.claim(
            self.db,
            self.caller.name,
            self.method,
            self.path,
            key,
            digest,
            self.settings.idempotency_lease_seconds,
            timedelta(hours=self.settings.idempotency_retention_hours),
        )
        if isinstance(outcome, idempotency.StoredResponse):
            if outcome.audit is not None:
                first = AuditInfo.from_json(outcome.audit)
                replay = AuditInfo(
                    f"replay-{first.action}",
                    first.patient_id,
                    first.resource_type,
                    first.resource_id,
                )
                with self.db.transaction() as session:
                    self._audit(session, replay, outcome.status)
            return json_response(
                outcome.status, outcome.body, {**outcome.headers, "Idempotent-Replayed": "true"}
            )
        try:
            with self.db.transaction() as session:
                answer = work(session)
                self._audit(session, answer.audit, answer.status)
                body = serialize(answer.body)
                idempotency.complete(
                    session,
                    outcome,
                    idempotency.StoredResponse(
                        answer.status,
                        body,
                        answer.headers,
                        None if answer.audit is None else answer.audit.to_json(),
                    ),
                )
        except BaseException:
            idempotency.release(self.db, outcome)
            raise
        return json_response(answer.status, body, answer.headers)


def _context(request: Request, caller: Caller, idempotency_key: str | None) -> RequestContext:
    route = request.scope.get("route")
    return RequestContext(
        db=request.app.state.db,
        settings=request.app.state.settings,
        caller=caller,
        method=request.method,
        route=route.path if isinstance(route, APIRoute) else request.url.path,
        path=request.url.path,
        idempotency_key=idempotency_key,
    )


async def read_context(
    request: Request, caller: Annotated[Caller, Depends(require(Scope.READ))]
) -> RequestContext:
    return _context(request, caller, None)


async def write_context(
    request: Request,
    caller: Annotated[Caller, Depends(require(Scope.WRITE))],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Retry-safe writes: the same key with the same body returns the "
            "first response again (kept at least 24 hours).",
        ),
    ] = None,
) -> RequestContext:
    return _context(request, caller, idempotency_key)


ReadContext = Annotated[RequestContext, Depends(read_context)]
WriteContext = Annotated[RequestContext, Depends(write_context)]
AdminCaller = Annotated[Caller, Depends(require(Scope.ADMIN))]
ScoresCaller = Annotated[Caller, Depends(require(Scope.SCORES))]
DbDep = Annotated[Database, Depends(get_db)]


def reason_given(query_reason: str | None, body_reason: str | None) -> str:
    """DELETE takes its `reason` as a query parameter or a body field (the body wins)."""
    why = body_reason if body_reason is not None else query_reason
    if why is None:
        raise InvalidInput("/reason", "is required (as a query parameter or a body field)")
    return why
