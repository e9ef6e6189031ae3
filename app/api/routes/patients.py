"""Patients: created with external identifiers, found by them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response

from app.api.context import Answer, Cursor, Limit, ReadContext, WriteContext, audited
from app.api.lean_route import LeanRoute
from app.errors import InvalidParameter
from app.schemas import examples
from app.schemas.common import Page, problem_responses
from app.schemas.records import PatientIn, PatientOut
from app.services import patients as service

router = APIRouter(route_class=LeanRoute, prefix="/v1/patients", tags=["patients"])


@router.post(
    "",
    summary="Create a patient with external identifiers",
    response_model=PatientOut,
    status_code=201,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 429),
)
@audited("create-patient")
async def create_patient(
    body: Annotated[PatientIn, Body(openapi_examples=examples.PATIENT)], ctx: WriteContext
) -> Response:
    """No names or direct identifiers: only `identifiers` (`system` + `value`, unique within an
    organization; one already in use there is 409 with the `patient_id` that holds it), sex,
    birth year and the `organization_id` (optional when the API key holds one organization)."""

    def answer(out: PatientOut) -> Answer:
        return Answer(
            out,
            ctx.touched(out.id, "patient", out.id),
            status=201,
            headers={"Location": f"/v1/patients/{out.id}"},
        )

    return await ctx.write_async(
        body, lambda s: answer(service.create_patient(s, ctx.access, body))
    )


@router.get(
    "",
    summary="Find a patient by identifier, or list patients",
    response_model=Page[PatientOut],
    responses=problem_responses(401, 403, 422, 429),
)
@audited("list-patients")
def list_patients(
    ctx: ReadContext,
    identifier: Annotated[
        str | None,
        Query(
            max_length=511,
            description="`system|value` (the `|` raw or percent-encoded as %7C); "
            "no match is 200 with no items",
            examples=["https://trial.example/subject|S-001"],
        ),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    """Only the patients of the API key's organizations; each one returned is audited."""

    def answer(page: Page[PatientOut]) -> Answer:
        return Answer(page, ctx.touched(patient_ids=tuple(p.id for p in page.items)))

    if identifier is not None:
        ctx.action = "search-patients"
        pair = service.parse_identifier_token(identifier)
        if pair is None:
            raise InvalidParameter("identifier", "must be `system|value` with both parts non-empty")
        return ctx.read(lambda s: answer(service.find_by_identifier(s, ctx.access, *pair)))
    size = ctx.page_size(limit)
    return ctx.read(lambda s: answer(service.list_patients(s, ctx.access, size, cursor)))


@router.get(
    "/{patient_id}",
    summary="One patient",
    response_model=PatientOut,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("read-patient")
def get_patient(patient_id: uuid.UUID, ctx: ReadContext) -> Response:
    return ctx.read(
        lambda s: Answer(
            service.get_patient(s, ctx.access, patient_id),
            ctx.touched(patient_id, "patient", patient_id),
        )
    )
