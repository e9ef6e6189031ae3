"""Authentication and authorization: bearer API keys, one scope per route.

A key is verified against the database once and then trusted from this worker's `KeyCache` for
`AUTH_CACHE_SECONDS`; every authenticated request is counted by the per-key rate limiter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from app.api.state import runtime
from app.auth.access import DEV_ACCESS, Access
from app.auth.keys import Scope
from app.db.database import Database
from app.errors import Forbidden, Unauthenticated
from app.services.api_keys import verify_token

bearer = HTTPBearer(
    auto_error=False,
    description="Paste only the API key itself (`pss_...`), without the word `Bearer`: it is "
    "sent as `Authorization: Bearer pss_...`. The first start writes an admin key to "
    "`data/admin-api-key.txt`; create more with `psoriasis-keys`.",
)


def _verify(db: Database, token: str) -> Access | None:
    with db.read() as session:
        return verify_token(session, token)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Access:
    state = runtime(request)
    if state.settings.auth_disabled:
        return DEV_ACCESS
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("send an API key as `Authorization: Bearer <key>`")
    token = credentials.credentials
    if token[:7].lower() == "bearer ":  # "Bearer " pasted into Swagger's Authorize dialog too
        token = token[7:].strip()
    access = state.key_cache.get(token)
    if access is None:
        access = await run_in_threadpool(_verify, state.db, token)
        if access is None:
            # Guessing keys costs a database lookup each: failures are limited per address.
            address = request.client.host if request.client else "unknown"
            state.failed_auth_limiter.check(f"failed-auth:{address}")
            raise Unauthenticated("the API key is not valid or has been revoked")
        state.key_cache.put(token, access)
    state.rate_limiter.check(str(access.key_id))
    return access


def require(scope: Scope) -> Callable[..., Awaitable[Access]]:
    """The route's one scope dependency (the route-introspection tests look for it)."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Access:
        if scope is Scope.SCORES and runtime(request).settings.scores_open and credentials is None:
            return DEV_ACCESS
        access = await authenticate(request, credentials)
        request.state.access = access  # for the audit of a refused request
        if scope not in access.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        return access

    dependency.__name__ = f"require_{scope.value}"
    dependency.required_scope = scope  # type: ignore[attr-defined]
    return dependency


def get_db(request: Request) -> Database:
    return runtime(request).db


AdminAccess = Annotated[Access, Depends(require(Scope.ADMIN))]
ScoresAccess = Annotated[Access, Depends(require(Scope.SCORES))]
DbDep = Annotated[Database, Depends(get_db)]
