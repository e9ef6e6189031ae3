"""Exports: every active assessment of the caller's organizations as flat rows, read in keyset
batches (bounded memory whatever the row count) for the CSV and SDTM mappers in app.formats."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Assessment, Patient, PatientIdentifier
from app.formats.csv_export import ExportRow
from app.services.patients import visible

BATCH = 500


@dataclass(frozen=True, slots=True)
class ExportFilter:
    identifier_system: str | None = None
    from_date: date | None = None
    to_date: date | None = None


def _filtered(query: Select, access: Access, flt: ExportFilter) -> Select:  # type: ignore[type-arg]
    query = query.join(Patient, Patient.id == Assessment.patient_id).where(
        visible(access), Assessment.entered_in_error.is_(False)
    )
    if flt.from_date is not None:
        query = query.where(Assessment.assessed_on >= flt.from_date)
    if flt.to_date is not None:
        query = query.where(Assessment.assessed_on <= flt.to_date)
    if flt.identifier_system is not None:
        query = query.join(
            PatientIdentifier,
            (PatientIdentifier.patient_id == Patient.id)
            & (PatientIdentifier.system == flt.identifier_system),
        )
    return query


def exported_patients(session: Session, access: Access, flt: ExportFilter) -> tuple[uuid.UUID, ...]:
    """The patients an export will contain (for its audit event, written before streaming)."""
    query = _filtered(select(Assessment.patient_id).distinct(), access, flt)
    return tuple(sorted(session.scalars(query)))


def _identifiers(
    session: Session, patient_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, str]]]:
    found: dict[uuid.UUID, list[tuple[str, str]]] = {p: [] for p in patient_ids}
    rows = session.execute(
        select(PatientIdentifier.patient_id, PatientIdentifier.system, PatientIdentifier.value)
        .where(PatientIdentifier.patient_id.in_(patient_ids))
        .order_by(PatientIdentifier.patient_id, PatientIdentifier.position)
    )
    for patient_id, system, value in rows:
        found[patient_id].append((system, value))
    return found


def export_rows(
    session: Session, access: Access, flt: ExportFilter, batch: int = BATCH
) -> Iterator[tuple[str | None, ExportRow]]:
    """(USUBJID, row) in (patient, date, id) order; the USUBJID is the value of the patient's
    identifier of `identifier_system` (None without one). Read `batch` rows at a time, each
    batch after the last one's key, so memory does not grow with the export."""
    columns = [
        Assessment.id,
        Assessment.patient_id,
        Assessment.version,
        Assessment.assessed_on,
        Assessment.content,
        Assessment.scores,
        Patient.organization_id,
    ]
    if flt.identifier_system is not None:
        columns.append(PatientIdentifier.value)
    order = (Assessment.patient_id, Assessment.assessed_on, Assessment.id)
    after: tuple[uuid.UUID, date, uuid.UUID] | None = None
    while True:
        query = _filtered(select(*columns), access, flt).order_by(*order).limit(batch)
        if after is not None:
            query = query.where(tuple_(*order) > after)
        rows = session.execute(query).all()
        if not rows:
            return
        identifiers = _identifiers(session, sorted({r[1] for r in rows}))
        for r in rows:
            yield (
                r[7] if flt.identifier_system is not None else None,
                ExportRow(
                    patient_id=str(r[1]),
                    organization_id=str(r[6]),
                    identifiers=identifiers[r[1]],
                    assessment_id=str(r[0]),
                    version=r[2],
                    assessed_on=r[3].isoformat(),
                    content=r[4],
                    scores=r[5],
                ),
            )
        last = rows[-1]
        after = (last[1], last[3], last[0])
        session.expunge_all()
        if len(rows) < batch:
            return
