"""Serial assessments: recorded once with their computed scores, amended by new versions,
marked entered-in-error, never erased."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Assessment
from app.errors import BaselineExists
from app.schemas.common import Page
from app.schemas.records import AssessmentAmend, AssessmentIn, AssessmentOut, AssessmentVersionOut
from app.schemas.scores import Scores
from app.services import audit, idempotency, versioning
from app.services.patients import ensure_patient, reachable, require_record
from app.services.scoring import ComputedScores, compute_scores

CONTENT_FIELDS = {
    "assessed_on",
    "visit",
    "assessor",
    "is_baseline",
    "notes",
    "pasi",
    "iga",
    "bsa_percent",
    "dlqi",
}


def content_of(body: AssessmentIn) -> dict[str, Any]:
    return body.model_dump(mode="json", include=CONTENT_FIELDS)


def to_out(row: Assessment | dict[str, Any]) -> AssessmentOut:
    return AssessmentOut.model_validate(versioning.record_fields(row))


def _active_baseline(session: Session, patient_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(
        select(Assessment.id).where(
            Assessment.patient_id == patient_id,
            Assessment.is_baseline.is_(True),
            Assessment.entered_in_error.is_(False),
        )
    )


def _baseline_conflict(access: Access, holder: uuid.UUID | None) -> BaselineExists:
    """Names the current baseline, unless the key may not read assessments."""
    if not access.may_read:
        return BaselineExists(
            "this patient already has an active baseline; amend it (is_baseline false) "
            "before flagging another"
        )
    return BaselineExists(
        f"assessment {holder} is already this patient's active baseline; amend it "
        "(is_baseline false) before flagging another",
        assessment_id=str(holder) if holder else None,
    )


@contextmanager
def _guarding_baseline(
    session: Session, access: Access, patient_id: uuid.UUID, flags_baseline: bool
) -> Iterator[None]:
    """The partial unique index settles races between concurrent baseline flags: the write runs
    in a savepoint so that losing the race is a 409, not an aborted transaction. Only a write
    that flags a baseline can lose it, so only those pay for the savepoint."""
    if not flags_baseline:
        yield
        return
    try:
        with session.begin_nested():
            yield
    except IntegrityError:
        raise _baseline_conflict(access, _active_baseline(session, patient_id)) from None


@dataclass(frozen=True, slots=True)
class ScoredAssessment:
    """An assessment body with its scores and stored columns, computed once by the scoring
    core. Routes score before the write transaction opens (on SQLite the write lock is held
    from its first statement), so the lock covers only the writes."""

    body: AssessmentIn
    columns: dict[str, Any]
    scores: Scores  # the same as `columns["scores"]`, as the model


def score_assessment(body: AssessmentIn) -> ScoredAssessment:
    computed = compute_scores(body)
    return ScoredAssessment(body, _columns(body, computed), computed.scores)


def _scored(body: AssessmentIn | ScoredAssessment) -> ScoredAssessment:
    return body if isinstance(body, ScoredAssessment) else score_assessment(body)


def _scored_columns(body: AssessmentIn) -> dict[str, Any]:
    """The content, its scores (computed here, once, by the scoring core) and the columns that
    outcomes and lists query."""
    return _columns(body, compute_scores(body))


def _columns(body: AssessmentIn, computed: ComputedScores) -> dict[str, Any]:
    return {
        "assessed_on": body.assessed_on,
        "visit": body.visit,
        "is_baseline": body.is_baseline,
        "pasi_tenths": computed.pasi_tenths,
        "bsa_percent": computed.bsa_percent,
        "iga": computed.iga,
        "content": content_of(body),
        "scores": computed.scores.model_dump(mode="json"),
    }


def create_assessment(
    session: Session,
    access: Access,
    patient_id: uuid.UUID,
    scored: AssessmentIn | ScoredAssessment,
) -> AssessmentOut:
    prepared = _scored(scored)
    body, columns = prepared.body, prepared.columns
    ensure_patient(session, access, patient_id)
    if body.is_baseline:
        holder = _active_baseline(session, patient_id)
        if holder is not None:
            raise _baseline_conflict(access, holder)
    row = versioning.create_record(
        session,
        Assessment,
        {"patient_id": patient_id, **columns},
        access.name,
        guard=_guarding_baseline(session, access, patient_id, body.is_baseline),
    )
    return to_out(row)


NewRows = tuple[dict[str, Any], dict[str, Any]]


def new_assessment_rows(access: Access, patient_id: uuid.UUID, scored: ScoredAssessment) -> NewRows:
    """`create_assessment`'s row and history entry, not yet written, for a patient the caller
    was checked to reach and an assessment that flags no baseline (the only check left to the
    database: a batch writes many with `insert_assessments`)."""
    if scored.body.is_baseline:
        raise ValueError("a baseline flag needs create_assessment's baseline check")
    return versioning.first_version(
        Assessment, {"patient_id": patient_id, **scored.columns}, access.name
    )


def new_assessment_out(rows: NewRows, scored: ScoredAssessment) -> AssessmentOut:
    """`to_out(rows[0])` without validating again what the request's body and the scoring core
    made: the output model takes the body's validated PASI and DLQI parts and the core's
    `Scores` as they are (pydantic does not revalidate instances), so only the record's own
    columns and the content's plain fields are checked. The same answer, byte for byte
    (`tests/test_new_assessment_out.py`)."""
    body = scored.body
    return AssessmentOut.model_validate(
        {
            **versioning.record_fields(rows[0]),
            "pasi": body.pasi,  # the parts that cost most to validate: as validated already
            "dlqi": body.dlqi,
            "scores": scored.scores,
        }
    )


def insert_assessments(session: Session, rows: list[NewRows]) -> None:
    versioning.insert_first_versions(session, Assessment, rows)


@dataclass(frozen=True, slots=True)
class NewAssessment:
    """One request's new assessment, prepared before its transaction (`new_assessment_rows`),
    with the audit event its request appends and, for a request with an `Idempotency-Key`, the
    key's row already answered (`idempotency.answered`): for `record_together`."""

    access: Access
    rows: NewRows
    event: audit.Event
    key: dict[str, Any] | None = None


def record_together(session: Session, items: list[NewAssessment]) -> list[bool]:
    """Several requests' new assessments (none flagging a baseline) written together: one
    access check, one lookup of their keys, one insert per table and one audit append for all
    of them. Returns, for each, whether it was written. One whose patient the caller cannot
    reach is not, nor one whose key is in use (nothing of it is written here: its request, run
    alone, answers 404, or its replay, 409 or 422, as `create_assessment` and
    `idempotency.run_once` do). A key taken meanwhile by another process fails the key insert
    on the unique index: the whole write is then rolled back and every request runs alone."""
    reached = reachable(session, [(item.access, item.rows[0]["patient_id"]) for item in items])
    free = idempotency.unused(session, [item.key for item in items])
    done = [ok and unused for ok, unused in zip(reached, free, strict=True)]
    kept = [item for item, ok in zip(items, done, strict=True) if ok]
    insert_assessments(session, [item.rows for item in kept])
    idempotency.insert_answered(session, [item.key for item in kept if item.key is not None])
    audit.record_events(session, [item.event for item in kept])
    return done


def require_assessment(session: Session, access: Access, assessment_id: uuid.UUID) -> Assessment:
    return require_record(session, access, Assessment, assessment_id)


def get_assessment(session: Session, access: Access, assessment_id: uuid.UUID) -> AssessmentOut:
    return to_out(require_assessment(session, access, assessment_id))


def amend_assessment(
    session: Session,
    access: Access,
    assessment_id: uuid.UUID,
    body: AssessmentAmend,
    if_match: str | None,
) -> AssessmentOut:
    columns = _scored_columns(body)
    row = require_assessment(session, access, assessment_id)
    versioning.check_amendable(row, if_match)
    flags_baseline = body.is_baseline and not row.is_baseline
    if flags_baseline:
        holder = _active_baseline(session, row.patient_id)
        if holder is not None and holder != row.id:
            raise _baseline_conflict(access, holder)
    versioning.amend(
        session,
        row,
        if_match=if_match,
        changes=columns,
        reason=body.reason,
        recorded_by=access.name,
        guard=_guarding_baseline(session, access, row.patient_id, flags_baseline),
    )
    return to_out(row)


def mark_entered_in_error(
    session: Session, access: Access, assessment_id: uuid.UUID, reason: str, if_match: str | None
) -> AssessmentOut:
    row = require_assessment(session, access, assessment_id)
    versioning.mark_entered_in_error(
        session, row, if_match=if_match, reason=reason, recorded_by=access.name
    )
    return to_out(row)


def history(
    session: Session, access: Access, assessment_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[uuid.UUID, Page[AssessmentVersionOut]]:
    """The patient's id (for the audit) and a page of the versions, oldest first."""
    page = versioning.history_page(
        session, require_assessment(session, access, assessment_id), limit, cursor
    )
    items = [AssessmentVersionOut.model_validate(v) for v in page.items]
    return page.patient_id, Page[AssessmentVersionOut](items=items, next_cursor=page.next_cursor)


def list_assessments(
    session: Session,
    access: Access,
    patient_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    from_date: date | None,
    to_date: date | None,
    visit: str | None,
) -> Page[AssessmentOut]:
    ensure_patient(session, access, patient_id)
    query = select(Assessment).where(
        Assessment.patient_id == patient_id, Assessment.entered_in_error.is_(False)
    )
    if from_date is not None:
        query = query.where(Assessment.assessed_on >= from_date)
    if to_date is not None:
        query = query.where(Assessment.assessed_on <= to_date)
    if visit is not None:
        query = query.where(Assessment.visit == visit)
    rows, next_cursor = versioning.record_page(
        session, query, Assessment, "assessed_on", limit, cursor
    )
    return Page[AssessmentOut](items=[to_out(r) for r in rows], next_cursor=next_cursor)
