"""Treatment courses: versioned like assessments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Treatment
from app.errors import Conflict, NotFound
from app.schemas.records import TreatmentIn, TreatmentOut, TreatmentVersionOut
from app.services.patients import ensure_patient
from app.services.versioning import add_version, affected_rows, check_if_match, versions_of

RESOURCE = "treatment"
CONTENT_FIELDS = {"agent", "started_on", "ended_on", "doses", "notes"}


def content_of(body: TreatmentIn) -> dict[str, Any]:
    return body.model_dump(mode="json", include=CONTENT_FIELDS)


def to_out(row: Treatment) -> TreatmentOut:
    return TreatmentOut.model_validate(
        {
            **row.content,
            "id": row.id,
            "patient_id": row.patient_id,
            "version": row.version,
            "status": "entered-in-error" if row.entered_in_error else "active",
            "recorded_at": row.recorded_at,
            "updated_at": row.updated_at,
        }
    )


def create_treatment(
    session: Session, patient_id: uuid.UUID, body: TreatmentIn, recorded_by: str
) -> Treatment:
    ensure_patient(session, patient_id)
    now = datetime.now(UTC)
    content = content_of(body)
    row = Treatment(
        id=uuid.uuid4(),
        patient_id=patient_id,
        version=1,
        entered_in_error=False,
        started_on=body.started_on,
        ended_on=body.ended_on,
        recorded_at=now,
        updated_at=now,
        content=content,
    )
    session.add(row)
    session.flush()
    add_version(
        session,
        resource_type=RESOURCE,
        resource_id=row.id,
        version=1,
        action="create",
        recorded_at=now,
        recorded_by=recorded_by,
        reason=None,
        entered_in_error=False,
        content=content,
        scores=None,
    )
    return row


def require_treatment(session: Session, treatment_id: uuid.UUID) -> Treatment:
    row = session.get(Treatment, treatment_id)
    if row is None:
        raise NotFound(f"no treatment {treatment_id}")
    return row


def _new_version(
    session: Session,
    row: Treatment,
    *,
    action: str,
    values: dict[str, Any],
    reason: str,
    recorded_by: str,
) -> Treatment:
    now = datetime.now(UTC)
    new_version = row.version + 1
    changed = affected_rows(
        session.execute(
            update(Treatment)
            .where(Treatment.id == row.id, Treatment.version == row.version)
            .values(version=new_version, updated_at=now, **values)
            .execution_options(synchronize_session=False)
        )
    )
    if changed != 1:
        current = session.scalar(select(Treatment.version).where(Treatment.id == row.id))
        check_if_match(f'"{row.version}"', current or 0, required=True)
    session.refresh(row)
    add_version(
        session,
        resource_type=RESOURCE,
        resource_id=row.id,
        version=new_version,
        action=action,
        recorded_at=now,
        recorded_by=recorded_by,
        reason=reason,
        entered_in_error=row.entered_in_error,
        content=row.content,
        scores=None,
    )
    return row


def amend_treatment(
    session: Session,
    treatment_id: uuid.UUID,
    body: TreatmentIn,
    reason: str,
    if_match: str | None,
    recorded_by: str,
) -> Treatment:
    row = require_treatment(session, treatment_id)
    check_if_match(if_match, row.version, required=True)
    if row.entered_in_error:
        raise Conflict(f"treatment {treatment_id} is entered-in-error and cannot be amended")
    values = {
        "started_on": body.started_on,
        "ended_on": body.ended_on,
        "content": content_of(body),
    }
    return _new_version(
        session, row, action="amend", values=values, reason=reason, recorded_by=recorded_by
    )


def mark_entered_in_error(
    session: Session, treatment_id: uuid.UUID, reason: str, if_match: str | None, recorded_by: str
) -> Treatment:
    row = require_treatment(session, treatment_id)
    check_if_match(if_match, row.version, required=False)
    if row.entered_in_error:
        return row
    return _new_version(
        session,
        row,
        action="entered-in-error",
        values={"entered_in_error": True},
        reason=reason,
        recorded_by=recorded_by,
    )


def list_treatments(session: Session, patient_id: uuid.UUID) -> list[Treatment]:
    ensure_patient(session, patient_id)
    return list(
        session.scalars(
            select(Treatment)
            .where(Treatment.patient_id == patient_id, Treatment.entered_in_error.is_(False))
            .order_by(Treatment.started_on, Treatment.recorded_at, Treatment.id)
        )
    )


def history(session: Session, row: Treatment) -> list[TreatmentVersionOut]:
    return [
        TreatmentVersionOut.model_validate(
            {
                **v.content,
                "version": v.version,
                "action": v.action,
                "recorded_at": v.recorded_at,
                "recorded_by": v.recorded_by,
                "reason": v.reason,
                "status": "entered-in-error" if v.entered_in_error else "active",
            }
        )
        for v in versions_of(session, RESOURCE, row.id)
    ]
