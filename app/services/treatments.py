"""Treatment courses: versioned like assessments (through the same `versioning` helper)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Treatment
from app.schemas.records import TreatmentAmend, TreatmentIn, TreatmentOut, TreatmentVersionOut
from app.services import versioning
from app.services.patients import ensure_patient, require_record

CONTENT_FIELDS = {"agent", "started_on", "ended_on", "doses", "notes"}


def content_of(body: TreatmentIn) -> dict[str, Any]:
    return body.model_dump(mode="json", include=CONTENT_FIELDS)


def to_out(row: Treatment) -> TreatmentOut:
    return TreatmentOut.model_validate(versioning.record_fields(row))


def _columns(body: TreatmentIn) -> dict[str, Any]:
    return {"started_on": body.started_on, "ended_on": body.ended_on, "content": content_of(body)}


def create_treatment(
    session: Session, access: Access, patient_id: uuid.UUID, body: TreatmentIn
) -> TreatmentOut:
    ensure_patient(session, access, patient_id)
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


def list_treatments(session: Session, access: Access, patient_id: uuid.UUID) -> list[TreatmentOut]:
    ensure_patient(session, access, patient_id)
    rows = session.scalars(
        select(Treatment)
        .where(Treatment.patient_id == patient_id, Treatment.entered_in_error.is_(False))
        .order_by(Treatment.started_on, Treatment.recorded_at, Treatment.id)
    )
    return [to_out(r) for r in rows]


def history(
    session: Session, access: Access, treatment_id: uuid.UUID
) -> tuple[uuid.UUID, list[TreatmentVersionOut]]:
    """The patient's id (for the audit) and every version, oldest first."""
    row = require_treatment(session, access, treatment_id)
    versions = versioning.history_fields(session, row)
    return row.patient_id, [TreatmentVersionOut.model_validate(v) for v in versions]
