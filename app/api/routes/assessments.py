"""Serial assessments: record, list, read (with ETag), amend (If-Match), mark entered-in-error,
history."""

from __future__ import annotations

import uuid
from datetime import date
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
from app.schemas.common import IsoDate, Page, problem_responses
from app.schemas.records import (
    AssessmentAmend,
    AssessmentIn,
    AssessmentOut,
    AssessmentVersionOut,
    ReasonIn,
)
from app.services import assessments as service

router = APIRouter(route_class=LeanRoute, tags=["assessments"])
RESOURCE = "assessment"


class VersionPage(Page[AssessmentVersionOut]):
    pass


@router.post(
    "/v1/patients/{patient_id}/assessments",
    summary="Record an assessment; returns it with its computed scores",
    response_model=AssessmentOut,
    status_code=201,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429),
)
@audited("create-assessment")
async def create_assessment(
    patient_id: uuid.UUID,
    body: Annotated[AssessmentIn, Body(openapi_examples=examples.ASSESSMENT)],
    ctx: WriteContext,
) -> Response:
    """Scores are computed once, by the scoring core, when the assessment is recorded. Flagging a
    second active baseline is 409."""
    scored = service.score_assessment(body)  # before the write transaction opens

    work = lambda s: record_answer(  # noqa: E731  # run alone, or by the writer as a fallback
        ctx, service.create_assessment(s, ctx.access, patient_id, scored), RESOURCE, 201
    )

    if body.is_baseline:  # its check needs the course: a transaction of its own
        return await ctx.write_async(body, work)
    rows = service.new_assessment_rows(ctx.access, patient_id, scored)
    return await ctx.write_together(
        body,
        work,
        record_answer(ctx, service.new_assessment_out(rows, scored), RESOURCE, 201),
        service.record_together,
        lambda event, key: service.NewAssessment(ctx.access, rows, event, key),
    )


@router.get(
    "/v1/patients/{patient_id}/assessments",
    summary="A patient's assessments in date order, paginated",
    response_model=Page[AssessmentOut],
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("list-assessments")
def list_assessments(
    patient_id: uuid.UUID,
    ctx: ReadContext,
    from_: Annotated[IsoDate | None, Query(alias="from", description="On or after")] = None,
    to: Annotated[IsoDate | None, Query(description="On or before")] = None,
    visit: Annotated[str | None, Query(max_length=100, description="Exact visit label")] = None,
    limit: Annotated[int | None, Query(ge=1, le=200, description="Default 50, max 200")] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """Ordered by (`assessed_on`, time recorded); entered-in-error assessments are left out."""
    size = min(limit or ctx.settings.default_page_size, ctx.settings.max_page_size)
    from_date: date | None = from_
    return ctx.read(
        lambda s: Answer(
            service.list_assessments(
                s,
                ctx.access,
                patient_id,
                limit=size,
                cursor=cursor,
                from_date=from_date,
                to_date=to,
                visit=visit,
            ),
            ctx.touched(patient_id, "patient", patient_id),
        )
    )


@router.get(
    "/v1/assessments/{assessment_id}",
    summary="One assessment, with its ETag",
    response_model=AssessmentOut,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("read-assessment")
def get_assessment(assessment_id: uuid.UUID, ctx: ReadContext) -> Response:
    return ctx.read(
        lambda s: record_answer(ctx, service.get_assessment(s, ctx.access, assessment_id), RESOURCE)
    )


@router.put(
    "/v1/assessments/{assessment_id}",
    summary="Amend an assessment (If-Match required); the old version is kept",
    response_model=AssessmentOut,
    responses=problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 428, 429),
)
@audited("amend-assessment")
async def amend_assessment(
    assessment_id: uuid.UUID,
    body: Annotated[AssessmentAmend, Body(openapi_examples=examples.ASSESSMENT_AMEND)],
    ctx: WriteContext,
    if_match: IfMatch = None,
) -> Response:
    """Send the full clinical content as in POST plus `reason`, with `If-Match` set to the ETag
    you read: missing is 428, stale is 412."""
    return await ctx.write_async(
        body,
        lambda s: record_answer(
            ctx,
            service.amend_assessment(s, ctx.access, assessment_id, body, if_match),
            RESOURCE,
        ),
    )


@router.delete(
    "/v1/assessments/{assessment_id}",
    summary="Mark an assessment entered-in-error (nothing is erased)",
    response_model=AssessmentOut,
    responses=problem_responses(400, 401, 403, 404, 412, 413, 415, 422, 429),
)
@audited("enter-in-error-assessment")
async def delete_assessment(
    assessment_id: uuid.UUID,
    ctx: WriteContext,
    reason: Annotated[
        str | None, Query(min_length=1, max_length=1000, description="Why (or in the body)")
    ] = None,
    body: Annotated[ReasonIn | None, Body()] = None,
    if_match: IfMatch = None,
) -> Response:
    """It leaves lists and outcomes but stays readable, and in its history. `If-Match` is
    optional here; when sent it must match."""
    why = reason_given(reason, None if body is None else body.reason)
    return await ctx.write_async(
        ReasonIn(reason=why),
        lambda s: record_answer(
            ctx,
            service.mark_entered_in_error(s, ctx.access, assessment_id, why, if_match),
            RESOURCE,
        ),
    )


@router.get(
    "/v1/assessments/{assessment_id}/history",
    summary="Every version of an assessment: who, when, why, and the content",
    response_model=VersionPage,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("read-assessment-history")
def assessment_history(
    assessment_id: uuid.UUID, ctx: ReadContext, limit: Limit = None, cursor: Cursor = None
) -> Response:
    def answer(history: tuple[uuid.UUID, Page[AssessmentVersionOut]]) -> Answer:
        patient_id, page = history
        return Answer(page, ctx.touched(patient_id, RESOURCE, assessment_id))

    return ctx.read(
        lambda s: answer(
            service.history(s, ctx.access, assessment_id, ctx.page_size(limit), cursor)
        )
    )
