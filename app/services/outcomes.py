"""Read patients' stored scores and hand them to the pure outcomes core; the answer is the
core's `Outcomes` (its JSON, chart and cohort views are each one function of it)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import String, bindparam, cast, select
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Assessment, Patient, Treatment
from app.errors import InvalidParameter, NotFound
from app.scoring.errors import ScoringInputError
from app.scoring.outcomes import (
    DatedScore,
    OutcomeOptions,
    Outcomes,
    TreatmentCourse,
    compute_outcomes,
)
from app.services.outcomes_cache import BytesCache, reach_with_revision
from app.services.patients import ensure_patient, visible

_SCORE_COLUMNS = (
    Assessment.id,
    Assessment.assessed_on,
    Assessment.recorded_at,
    Assessment.pasi_tenths,
    Assessment.bsa_percent,
    Assessment.iga,
    Assessment.is_baseline,
    Assessment.visit,
)
# Built once: the outcomes of a patient read these on every request. PostgreSQL sends the id
# as text, already in `str(uuid)`'s form (lowercase, hyphenated), instead of a UUID object that
# `_dated` would turn into that text again (a tenth of reading a 1,000-assessment course).
_ACTIVE_SCORES = {
    dialect: select(id_column, *_SCORE_COLUMNS[1:]).where(
        Assessment.patient_id == bindparam("patient_id"), Assessment.entered_in_error.is_(False)
    )
    for dialect, id_column in (
        ("sqlite", Assessment.id),
        ("postgresql", cast(Assessment.id, String)),
    )
}
_ACTIVE_TREATMENTS = select(Treatment.id, Treatment.started_on, Treatment.ended_on).where(
    Treatment.patient_id == bindparam("patient_id"), Treatment.entered_in_error.is_(False)
)


def _dated(row: tuple[object, ...]) -> DatedScore:
    assessment_id, assessed_on, recorded_at, pasi_tenths, bsa, iga, is_baseline, visit = row
    return DatedScore(
        str(assessment_id),
        assessed_on,  # type: ignore[arg-type]
        recorded_at,  # type: ignore[arg-type]
        pasi_tenths,  # type: ignore[arg-type]
        None if bsa is None else Decimal(bsa).normalize(),  # type: ignore[arg-type]
        iga,  # type: ignore[arg-type]
        bool(is_baseline),
        visit,  # type: ignore[arg-type]
    )


def load_scores(session: Session, patient_id: uuid.UUID) -> list[DatedScore]:
    # Fetched whole (one fetchall, not a driver call per row).
    connection = session.connection()
    rows = (
        connection.execute(_ACTIVE_SCORES[connection.dialect.name], {"patient_id": patient_id})
        .tuples()
        .all()
    )
    return [_dated(r) for r in rows]


def load_scores_of_many(
    session: Session, access: Access, patient_ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, list[DatedScore]]:
    """Many patients' dated scores in one query (for cohorts): every patient the caller may
    reach, or those of `patient_ids` among them. Patients without assessments are absent."""
    query = (
        select(Assessment.patient_id, *_SCORE_COLUMNS)
        .join(Patient, Patient.id == Assessment.patient_id)
        .where(Assessment.entered_in_error.is_(False), visible(access))
    )
    if patient_ids is not None:
        query = query.where(Assessment.patient_id.in_(list(patient_ids)))
    grouped: dict[uuid.UUID, list[DatedScore]] = defaultdict(list)
    # Core execution (no ORM result layer): a third less CPU per row over 200,000 rows.
    for patient_id, *rest in session.connection().execute(query):
        grouped[patient_id].append(_dated(tuple(rest)))
    return dict(grouped)


@dataclass(frozen=True, slots=True)
class CourseRecord:
    """An active treatment course as stored: the core's course, and the agent and doses that
    cohorts (selection by agent) and charts (spans with dose marks) read."""

    course: TreatmentCourse
    agent: str
    doses: tuple[tuple[date, float, str], ...]  # (given_on, amount, unit), in stored order


def _doses(content: dict[str, Any]) -> tuple[tuple[date, float, str], ...]:
    return tuple(
        (date.fromisoformat(str(d["given_on"])), float(d["amount"]), str(d["unit"]))
        for d in content.get("doses") or ()
    )


def load_courses_of_many(
    session: Session, access: Access, patient_ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, list[CourseRecord]]:
    """Many patients' active treatment courses in one query, scoped by `visible` like
    `load_scores_of_many`; each patient's courses ordered by start date (then as recorded).
    Patients without courses are absent."""
    query = (
        select(
            Treatment.patient_id,
            Treatment.id,
            Treatment.started_on,
            Treatment.ended_on,
            Treatment.content,
        )
        .join(Patient, Patient.id == Treatment.patient_id)
        .where(Treatment.entered_in_error.is_(False), visible(access))
        .order_by(Treatment.patient_id, Treatment.started_on, Treatment.recorded_at, Treatment.id)
    )
    if patient_ids is not None:
        query = query.where(Treatment.patient_id.in_(list(patient_ids)))
    grouped: dict[uuid.UUID, list[CourseRecord]] = defaultdict(list)
    for patient_id, treatment_id, started_on, ended_on, content in session.connection().execute(
        query
    ):
        grouped[patient_id].append(
            CourseRecord(
                TreatmentCourse(str(treatment_id), started_on, ended_on),
                str(content.get("agent", "")),
                _doses(content),
            )
        )
    return dict(grouped)


def load_treatments(session: Session, patient_id: uuid.UUID) -> list[TreatmentCourse]:
    rows = session.connection().execute(_ACTIVE_TREATMENTS, {"patient_id": patient_id}).all()
    return [TreatmentCourse(str(r.id), r.started_on, r.ended_on) for r in rows]


def patient_outcomes(
    session: Session,
    access: Access,
    patient_id: uuid.UUID,
    options: OutcomeOptions,
    treatment_id: uuid.UUID | None,
    *,
    reached: bool = False,
) -> Outcomes:
    """`reached`: this transaction has already checked that the caller may reach the patient."""
    if not reached:
        ensure_patient(session, access, patient_id)
    treatments = load_treatments(session, patient_id)
    if treatment_id is not None:
        anchor = next((t for t in treatments if t.treatment_id == str(treatment_id)), None)
        if anchor is None:
            raise NotFound(f"patient {patient_id} has no active treatment {treatment_id}")
        options = replace(options, treatment=anchor)
    try:
        result = compute_outcomes(load_scores(session, patient_id), options, treatments)
    except ScoringInputError as exc:
        raise InvalidParameter(exc.field, exc.rule) from exc
    if result is None:
        raise NotFound(
            f"patient {patient_id} has no assessments (entered-in-error ones do not count): "
            "there are no outcomes yet",
            reason="no-assessments",
        )
    return result


@dataclass(frozen=True, slots=True)
class OutcomesRead:
    """A patient's outcomes read: the cached answer (`body`), or the outcomes computed to be
    encoded and cached under `key`."""

    key: Hashable
    body: bytes | None
    outcomes: Outcomes | None


def _probe(
    session: Session,
    access: Access,
    patient_id: uuid.UUID,
    options: OutcomeOptions,
    treatment_id: uuid.UUID | None,
    cache: BytesCache,
) -> tuple[Hashable, bytes | None]:
    """The cache key under the patient's current revision and what is cached there; 404 unless
    the caller may reach the patient (one statement for both)."""
    key = (patient_id, reach_with_revision(session, access, patient_id), options, treatment_id)
    return key, cache.get(key)


def cached_outcomes(
    session: Session,
    access: Access,
    patient_id: uuid.UUID,
    options: OutcomeOptions,
    treatment_id: uuid.UUID | None,
    cache: BytesCache,
) -> OutcomesRead | None:
    """The answer cached under the patient's current revision; None when nothing is cached
    (then `read_outcomes`). 404 unless the caller may reach the patient, checked first,
    always."""
    if not cache.max_bytes:
        return None
    key, body = _probe(session, access, patient_id, options, treatment_id, cache)
    return None if body is None else OutcomesRead(key, body, None)


def read_outcomes(
    session: Session,
    access: Access,
    patient_id: uuid.UUID,
    options: OutcomeOptions,
    treatment_id: uuid.UUID | None,
    cache: BytesCache,
    lane: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> OutcomesRead:
    """`patient_outcomes`, or its answer cached under the patient's revision (another worker
    may have cached it since `cached_outcomes` looked). The access check comes first, always;
    the revision is read before the records, in their transaction (see `outcomes_cache`). A
    computation runs inside `lane` (`Database.bulk_read`), a cached answer without it."""
    key: Hashable = None
    if cache.max_bytes:
        key, body = _probe(session, access, patient_id, options, treatment_id, cache)
        if body is not None:
            return OutcomesRead(key, body, None)
    with lane():
        computed = patient_outcomes(
            session, access, patient_id, options, treatment_id, reached=key is not None
        )
    return OutcomesRead(key, None, computed)
