"""Treatment courses: anchors for time-to-event outcomes; versioned like assessments."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.api.assessments import IfMatch
from app.api.deps import Answer, ReadContext, WriteContext, reason_given
from app.db.models import Treatment
from app.schemas.common import Page, problem_responses
from app.schemas.records import (
    ReasonIn,
    TreatmentAmend,
    TreatmentIn,
    TreatmentOut,
    TreatmentVersionOut,
)
from app.services import treatments as service
from app.services.audit import AuditInfo
from app.services.versioning import etag

router = APIRouter(tags=["treatments"])


class TreatmentPage(Page[TreatmentOut]):
    pass


class TreatmentVersionPage(Page[TreatmentVersionOut]):
    pass


def _answer(row: Treatment, action: str, status: int = 200) -> Answer:
    out = service.to_out(row)
    return Answer(
        out,
        AuditInfo(action, out.patient_id, "treatment", out.id),
        status=status,
        headers={"ETag": etag(out.version), "Location": f"/v1/treatments/{out.id}"},
    )


@router.post(
    "/v1/patients/{patient_id}/treatments",
    summary="Record a treatment course",
    response_model=TreatmentOut,
    status_code=201,
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 429),
)
def create_treatment(patient_id: uuid.UUID, body: TreatmentIn, ctx: WriteContext) -> Response:
    def work(session: Session) -> Answer:
        row = service.create_treatment(session, patient_id, body, ctx.caller.name)
        return _answer(row, "create-treatment", 201)

    return ctx.write(body, work)


@router.get(
    "/v1/patients/{patient_id}/treatments",
    summary="A patient's treatment courses by start date",
    response_model=TreatmentPage,
    responses=problem_responses(401, 403, 404, 422, 429),
)
def list_treatments(patient_id: uuid.UUID, ctx: ReadContext) -> Response:
    return ctx.read(
        lambda s: Answer(
            TreatmentPage(
                items=[service.to_out(r) for r in service.list_treatments(s, patient_id)],
                next_cursor=None,
            ),
            AuditInfo("list-treatments", patient_id, "patient", patient_id),
        )
    )


@router.get(
    "/v1/treatments/{treatment_id}",
    summary="One treatment course, with its ETag",
    response_model=TreatmentOut,
    responses=problem_responses(401, 403, 404, 422, 429),
)
def get_treatment(treatment_id: uuid.UUID, ctx: ReadContext) -> Response:
    return ctx.read(lambda s: _answer(service.require_treatment(s, treatment_id), "read-treatment"))


@router.put(
    "/v1/treatments/{treatment_id}",
    summary="Amend a treatment course (If-Match required)",
    response_model=TreatmentOut,
    responses=problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 428, 429),
)
def amend_treatment(
    treatment_id: uuid.UUID, body: TreatmentAmend, ctx: WriteContext, if_match: IfMatch = None
) -> Response:
    def work(session: Session) -> Answer:
        row = service.amend_treatment(
            session, treatment_id, body, body.reason, if_match, ctx.caller.name
        )
        return _answer(row, "amend-treatment")

    return ctx.write(body, work)


@router.delete(
    "/v1/treatments/{treatment_id}",
    summary="Mark a treatment course entered-in-error",
    response_model=TreatmentOut,
    responses=problem_responses(400, 401, 403, 404, 412, 413, 415, 422, 429),
)
def delete_treatment(
    treatment_id: uuid.UUID,
    ctx: WriteContext,
    reason: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
    body: Annotated[ReasonIn | None, Body()] = None,
    if_match: IfMatch = None,
) -> Response:
    why = reason_given(reason, None if body is None else body.reason)

    def work(session: Session) -> Answer:
        row = service.mark_entered_in_error(session, treatment_id, why, if_match, ctx.caller.name)
        return _answer(row, "enter-in-error-treatment")

    return ctx.write(ReasonIn(reason=why), work)


@router.get(
    "/v1/treatments/{treatment_id}/history",
    summary="Every version of a treatment course",
    response_model=TreatmentVersionPage,
    responses=problem_responses(401, 403, 404, 422, 429),
)
def treatment_history(treatment_id: uuid.UUID, ctx: ReadContext) -> Response:
    def work(session: Session) -> Answer:
        row = service.require_treatment(session, treatment_id)
        return Answer(
            TreatmentVersionPage(items=service.history(session, row), next_cursor=None),
            AuditInfo("read-treatment-history", row.patient_id, "treatment", treatment_id),
        )

    return ctx.read(work)
