"""Treatment courses: anchors for time-to-event outcomes; versioned like assessments."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response

from app.api.context import (
    Answer,
    Cursor,
    IfMatch,
    Limit,
    ReadContext,
    WriteContext,
    audited,
    reason_given,
    record_answer,
)
from app.api.lean_route import LeanRoute
from app.schemas import examples
from app.schemas.common import Page, problem_responses
from app.schemas.records import (
    ReasonIn,
    TreatmentAmend,
    TreatmentIn,
    TreatmentOut,
    TreatmentVersionOut,
)
from app.services import treatments as service

router = APIRouter(route_class=LeanRoute, tags=["treatments"])
RESOURCE = "treatment"


class TreatmentPage(Page[TreatmentOut]):
    pass


class TreatmentVersionPage(Page[TreatmentVersionOut]):
    pass


@router.post(
    "/v1/patients/{patient_id}/treatments",
    summary="Record a treatment course",
    response_model=TreatmentOut,
    status_code=201,
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 429),
)
@audited("create-treatment")
async def create_treatment(
    patient_id: uuid.UUID,
    body: Annotated[TreatmentIn, Body(openapi_examples=examples.TREATMENT)],
    ctx: WriteContext,
) -> Response:
    return await ctx.write_async(
        body,
        lambda s: record_answer(
            ctx,
            service.create_treatment(s, ctx.access, patient_id, body),
            RESOURCE,
            201,
        ),
    )


@router.get(
    "/v1/patients/{patient_id}/treatments",
    summary="A patient's treatment courses by start date",
    response_model=TreatmentPage,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("list-treatments")
def list_treatments(
    patient_id: uuid.UUID, ctx: ReadContext, limit: Limit = None, cursor: Cursor = None
) -> Response:
    """Entered-in-error courses are left out; at most 200 active courses per patient."""
    return ctx.read(
        lambda s: Answer(
            service.list_treatments(s, ctx.access, patient_id, ctx.page_size(limit), cursor),
            ctx.touched(patient_id, "patient", patient_id),
        )
    )


@router.get(
    "/v1/treatments/{treatment_id}",
    summary="One treatment course, with its ETag",
    response_model=TreatmentOut,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("read-treatment")
def get_treatment(treatment_id: uuid.UUID, ctx: ReadContext) -> Response:
    return ctx.read(
        lambda s: record_answer(ctx, service.get_treatment(s, ctx.access, treatment_id), RESOURCE)
    )


@router.put(
    "/v1/treatments/{treatment_id}",
    summary="Amend a treatment course (If-Match required)",
    response_model=TreatmentOut,
    responses=problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 428, 429),
)
@audited("amend-treatment")
async def amend_treatment(
    treatment_id: uuid.UUID,
    body: Annotated[TreatmentAmend, Body(openapi_examples=examples.TREATMENT_AMEND)],
    ctx: WriteContext,
    if_match: IfMatch = None,
) -> Response:
    return await ctx.write_async(
        body,
        lambda s: record_answer(
            ctx,
            service.amend_treatment(s, ctx.access, treatment_id, body, if_match),
            RESOURCE,
        ),
    )


@router.delete(
    "/v1/treatments/{treatment_id}",
    summary="Mark a treatment course entered-in-error",
    response_model=TreatmentOut,
    responses=problem_responses(400, 401, 403, 404, 412, 413, 415, 422, 429),
)
@audited("enter-in-error-treatment")
async def delete_treatment(
    treatment_id: uuid.UUID,
    ctx: WriteContext,
    reason: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
    body: Annotated[ReasonIn | None, Body()] = None,
    if_match: IfMatch = None,
) -> Response:
    why = reason_given(reason, None if body is None else body.reason)
    return await ctx.write_async(
        ReasonIn(reason=why),
        lambda s: record_answer(
            ctx,
            service.mark_entered_in_error(s, ctx.access, treatment_id, why, if_match),
            RESOURCE,
        ),
    )


@router.get(
    "/v1/treatments/{treatment_id}/history",
    summary="Every version of a treatment course",
    response_model=TreatmentVersionPage,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("read-treatment-history")
def treatment_history(
    treatment_id: uuid.UUID, ctx: ReadContext, limit: Limit = None, cursor: Cursor = None
) -> Response:
    def answer(history: tuple[uuid.UUID, Page[TreatmentVersionOut]]) -> Answer:
        patient_id, page = history
        return Answer(page, ctx.touched(patient_id, RESOURCE, treatment_id))

    return ctx.read(
        lambda s: answer(service.history(s, ctx.access, treatment_id, ctx.page_size(limit), cursor))
    )
