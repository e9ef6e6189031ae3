"""Treatment courses: versioned like assessments (through the same `versioning` helper)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Treatment
from app.errors import Conflict
from app.schemas.common import Page
from app.schemas.records import TreatmentAmend, TreatmentIn, TreatmentOut, TreatmentVersionOut
from app.services import versioning
from app.services.patients import ensure_patient, require_record

CONTENT_FIELDS = {"agent", "started_on", "ended_on", "doses", "notes"}


def content_of(body: TreatmentIn) -> dict[str, Any]:
    return body.model_dump(mode="json", include=CONTENT_FIELDS)


def to_out(row: Treatment | dict[str, Any]) -> TreatmentOut:
    return TreatmentOut.model_validate(versioning.record_fields(row))


def _columns(body: TreatmentIn) -> dict[str, Any]:
    return {"started_on": body.started_on, "ended_on": body.ended_on, "content": content_of(body)}


MAX_ACTIVE_COURSES = 200
"""Active treatment courses a patient may have (each holds at most 1,000 doses): a bound on
what one list or outcomes read must carry, far above any real course history."""


def create_treatment(
    session: Session, access: Access, patient_id: uuid.UUID, body: TreatmentIn
) -> TreatmentOut:
    ensure_patient(session, access, patient_id)
    active = session.scalar(
        select(func.count())
        .select_from(Treatment)
        .where(Treatment.patient_id == patient_id, Treatment.entered_in_error.is_(False))
    )
    if (active or 0) >= MAX_ACTIVE_COURSES:
        raise Conflict(
            f"patient {patient_id} already has {MAX_ACTIVE_COURSES} active treatment courses, "
            "the most one patient may have; mark mistaken ones entered-in-error first"
        )
    row = versioning.create_record(
        session, Treatment, {"patient_id": patient_id, **_columns(body)}, access.name
    )
    return to_out(row)


def require_treatment(session: Session, access: Access, treatment_id: uuid.UUID) -> Treatment:
    return require_record(session, access, Treatment, treatment_id)


def get_treatment(session: Session, access: Access, treatment_id: uuid.UUID) -> TreatmentOut:
    return to_out(require_treatment(session, access, treatment_id))


def amend_treatment(
    session: Session,
    access: Access,
    treatment_id: uuid.UUID,
    body: TreatmentAmend,
    if_match: str | None,
) -> TreatmentOut:
    row = require_treatment(session, access, treatment_id)
    versioning.amend(
        session,
        row,
        if_match=if_match,
        changes=_columns(body),
        reason=body.reason,
        recorded_by=access.name,
    )
    return to_out(row)


def mark_entered_in_error(
    session: Session, access: Access, treatment_id: uuid.UUID, reason: str, if_match: str | None
) -> TreatmentOut:
    row = require_treatment(session, access, treatment_id)
    versioning.mark_entered_in_error(
        session, row, if_match=if_match, reason=reason, recorded_by=access.name
    )
    return to_out(row)


def list_treatments(
    session: Session, access: Access, patient_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[TreatmentOut]:
    """Active courses by start date, one keyset page at a time."""
    ensure_patient(session, access, patient_id)
    query = select(Treatment).where(
        Treatment.patient_id == patient_id, Treatment.entered_in_error.is_(False)
    )
    rows, next_cursor = versioning.record_page(
        session, query, Treatment, "started_on", limit, cursor
    )
    return Page[TreatmentOut](items=[to_out(r) for r in rows], next_cursor=next_cursor)


def history(
    session: Session, access: Access, treatment_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[uuid.UUID, Page[TreatmentVersionOut]]:
    """The patient's id (for the audit) and a page of the versions, oldest first."""
    page = versioning.history_page(
        session, require_treatment(session, access, treatment_id), limit, cursor
    )
    items = [TreatmentVersionOut.model_validate(v) for v in page.items]
    return page.patient_id, Page[TreatmentVersionOut](items=items, next_cursor=page.next_cursor)
