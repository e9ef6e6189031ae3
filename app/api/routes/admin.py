"""Administration (scope `admin`): organizations, API keys and the audit trail. Every request
here is audited too."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.api.context import AdminContext, Answer, audited
from app.api.lean_route import LeanRoute
from app.api.state import runtime
from app.auth.keys import Scope
from app.schemas import examples
from app.schemas.common import NO_NUL, Page, StrictInput, problem_responses
from app.services import api_keys, audit, organizations

router = APIRouter(route_class=LeanRoute, tags=["admin"])


class OrganizationIn(StrictInput):
    name: Annotated[str, Field(min_length=1, max_length=200), NO_NUL] = Field(
        description="A clinic, a hospital department or a study team"
    )


class OrganizationOut(BaseModel):
    id: uuid.UUID
    name: str


class OrganizationPage(Page[OrganizationOut]):
    pass


class ApiKeyIn(StrictInput):
    name: Annotated[str, Field(min_length=1, max_length=100), NO_NUL]
    scopes: list[Scope] = Field(min_length=1, description="Any of scores, read, write, admin")
    organizations: list[uuid.UUID] | None = Field(
        default=None,
        max_length=100,
        description="The organizations a non-admin key holds (it reaches only their patients); "
        "may be left out when the service has one organization. An admin key spans all and "
        "names none.",
    )


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    organizations: list[uuid.UUID] = Field(description="Empty for an admin key (it spans all)")


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown once, stored only as a hash")


class ApiKeyPage(Page[ApiKeyOut]):
    pass


class AuditEventOut(BaseModel):
    id: int
    occurred_at: datetime
    key_id: uuid.UUID | None = Field(description="The API key's id (null: auth disabled)")
    key_name: str
    action: str
    method: str
    route: str
    patient_id: uuid.UUID | None = Field(description="The patient the request was about")
    patient_ids: list[uuid.UUID] = Field(
        description="Every patient the request touched (a search or list: each one returned)"
    )
    organization_id: uuid.UUID | None
    resource_type: str | None
    resource_id: uuid.UUID | None
    status: int
    prev_hash: str = Field(description="The previous event's chain_hash")
    chain_hash: str = Field(description="SHA-256 over this event's content and prev_hash")


class AuditPage(Page[AuditEventOut]):
    pass


ADMIN_ERRORS = problem_responses(401, 403, 422, 429)


@router.post(
    "/v1/organizations",
    summary="Create an organization (a clinic, department or study)",
    response_model=OrganizationOut,
    status_code=201,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 429),
)
@audited("create-organization")
def create_organization(
    body: Annotated[OrganizationIn, Body(openapi_examples=examples.ORGANIZATION)],
    ctx: AdminContext,
) -> Response:
    def answer(row: organizations.OrganizationInfo) -> Answer:
        out = OrganizationOut(id=row.id, name=row.name)
        info = ctx.touched(resource_type="organization", resource_id=row.id)
        return Answer(out, info, status=201, headers={"Location": f"/v1/organizations/{row.id}"})

    return ctx.write(body, lambda s: answer(organizations.create_organization(s, body.name)))


@router.get(
    "/v1/organizations",
    summary="List organizations",
    response_model=OrganizationPage,
    responses=ADMIN_ERRORS,
)
@audited("list-organizations")
def list_organizations(
    ctx: AdminContext,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    def answer(page: tuple[list[organizations.OrganizationInfo], str | None]) -> Answer:
        rows, next_cursor = page
        items = [OrganizationOut(id=r.id, name=r.name) for r in rows]
        return Answer(OrganizationPage(items=items, next_cursor=next_cursor), ctx.touched())

    return ctx.read(lambda s: answer(organizations.list_organizations(s, limit, cursor)))


def _key_out(info: api_keys.KeyInfo) -> ApiKeyOut:
    return ApiKeyOut(**asdict(info))


@router.post(
    "/v1/api-keys",
    summary="Create an API key (shown once)",
    response_model=ApiKeyCreated,
    status_code=201,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 429),
)
@audited("create-api-key")
def create_api_key(
    body: Annotated[ApiKeyIn, Body(openapi_examples=examples.API_KEY)], ctx: AdminContext
) -> Response:
    def answer(created: tuple[api_keys.KeyInfo, str]) -> Answer:
        info, token = created
        out = ApiKeyCreated(**asdict(info), key=token)
        return Answer(out, ctx.touched(resource_type="api_key", resource_id=info.id), status=201)

    return ctx.write(
        body,
        lambda s: answer(
            api_keys.create_key(s, body.name, frozenset(body.scopes), body.organizations)
        ),
    )


@router.get(
    "/v1/api-keys", summary="List API keys", response_model=ApiKeyPage, responses=ADMIN_ERRORS
)
@audited("list-api-keys")
def list_api_keys(ctx: AdminContext) -> Response:
    return ctx.read(
        lambda s: Answer(
            ApiKeyPage(items=[_key_out(k) for k in api_keys.list_keys(s)], next_cursor=None),
            ctx.touched(),
        )
    )


@router.delete(
    "/v1/api-keys/{key_id}",
    summary="Revoke an API key (at once on this worker, within AUTH_CACHE_SECONDS on others)",
    response_model=ApiKeyOut,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("revoke-api-key")
def revoke_api_key(key_id: uuid.UUID, ctx: AdminContext, request: Request) -> Response:
    response = ctx.write(
        None,
        lambda s: Answer(
            _key_out(api_keys.revoke_key(s, key_id)),
            ctx.touched(resource_type="api_key", resource_id=key_id),
        ),
    )
    runtime(request).key_cache.forget(key_id)  # at once here; other workers within the TTL
    return response


@router.get(
    "/v1/audit-events",
    summary="The audit trail: who read or changed which patient's data, when, with what result",
    response_model=AuditPage,
    responses=ADMIN_ERRORS,
)
@audited("read-audit-events")
def list_audit_events(
    ctx: AdminContext,
    patient_id: Annotated[
        uuid.UUID | None,
        Query(description="Events that touched this patient (searches that returned it too)"),
    ] = None,
    key_id: Annotated[uuid.UUID | None, Query(description="Events of this API key")] = None,
    key_name: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=40)] = None,
    since: Annotated[datetime | None, Query(description="occurred_at on or after")] = None,
    until: Annotated[datetime | None, Query(description="occurred_at before")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Reading the audit is itself audited (and, with `patient_id`, touches that patient)."""
    where = audit.AuditFilter(
        patient_id=patient_id,
        key_id=key_id,
        key_name=key_name,
        action=action,
        since=since,
        until=until,
    )

    def answer(page: audit.EventPage) -> Answer:
        items = [
            AuditEventOut(
                **{c: getattr(r, c) for c in AuditEventOut.model_fields if c != "patient_ids"},
                patient_ids=page.patients.get(r.id, []),
            )
            for r in page.events
        ]
        return Answer(AuditPage(items=items, next_cursor=page.next_cursor), ctx.touched(patient_id))

    return ctx.read(lambda s: answer(audit.list_events(s, where, limit, cursor)))
