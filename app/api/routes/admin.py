"""Administration: API keys and the audit trail (scope `admin`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from app.api.auth import AdminAccess, DbDep
from app.api.state import runtime
from app.auth.keys import Scope
from app.schemas.common import Page, StrictInput, problem_responses
from app.services import api_keys, audit

router = APIRouter(tags=["admin"])


class ApiKeyIn(StrictInput):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    scopes: list[Scope] = Field(min_length=1, description="Any of scores, read, write, admin")

    model_config = {
        "json_schema_extra": {"examples": [{"name": "clinic-a", "scopes": ["read", "write"]}]}
    }


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown once, stored only as a hash")


class ApiKeyPage(Page[ApiKeyOut]):
    pass


class AuditEventOut(BaseModel):
    id: int
    occurred_at: datetime
    key_name: str
    action: str
    method: str
    route: str
    patient_id: uuid.UUID | None
    resource_type: str | None
    resource_id: uuid.UUID | None
    status: int


class AuditPage(Page[AuditEventOut]):
    pass


ADMIN_ERRORS = problem_responses(401, 403, 422, 429)


@router.post(
    "/v1/api-keys",
    summary="Create an API key (shown once)",
    response_model=ApiKeyCreated,
    status_code=201,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 429),
)
def create_api_key(body: ApiKeyIn, _access: AdminAccess, db: DbDep) -> ApiKeyCreated:
    with db.transaction() as session:
        info, token = api_keys.create_key(session, body.name, frozenset(body.scopes))
    return ApiKeyCreated(**_fields(info), key=token)


def _fields(info: api_keys.KeyInfo) -> dict[str, object]:
    return {
        "id": info.id,
        "name": info.name,
        "scopes": info.scopes,
        "created_at": info.created_at,
        "revoked_at": info.revoked_at,
    }


@router.get(
    "/v1/api-keys", summary="List API keys", response_model=ApiKeyPage, responses=ADMIN_ERRORS
)
def list_api_keys(_access: AdminAccess, db: DbDep) -> ApiKeyPage:
    with db.read() as session:
        keys = api_keys.list_keys(session)
    return ApiKeyPage(items=[ApiKeyOut(**_fields(k)) for k in keys], next_cursor=None)


@router.delete(
    "/v1/api-keys/{key_id}",
    summary="Revoke an API key (at once on this worker, within AUTH_CACHE_SECONDS on others)",
    response_model=ApiKeyOut,
    responses=problem_responses(401, 403, 404, 422, 429),
)
def revoke_api_key(
    key_id: uuid.UUID, _access: AdminAccess, db: DbDep, request: Request
) -> ApiKeyOut:
    with db.transaction() as session:
        info = api_keys.revoke_key(session, key_id)
    runtime(request).key_cache.forget(key_id)  # at once here; other workers within the TTL
    return ApiKeyOut(**_fields(info))


@router.get(
    "/v1/audit-events",
    summary="The audit trail of reads and writes of patient data",
    response_model=AuditPage,
    responses=ADMIN_ERRORS,
)
def list_audit_events(
    _access: AdminAccess,
    db: DbDep,
    patient_id: uuid.UUID | None = None,
    key_name: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=40)] = None,
    since: Annotated[datetime | None, Query(description="occurred_at on or after")] = None,
    until: Annotated[datetime | None, Query(description="occurred_at before")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    where = audit.AuditFilter(patient_id, key_name, action, since, until)
    with db.read() as session:
        rows, next_cursor = audit.list_events(session, where, limit, cursor)
    return AuditPage(
        items=[AuditEventOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )
