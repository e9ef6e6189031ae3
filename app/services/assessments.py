"""Serial assessments: recorded once with their computed scores, amended by new versions,
marked entered-in-error, never erased."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Assessment, table_of
from app.errors import BaselineExists, Conflict, InvalidParameter, NotFound
from app.schemas.common import Page
from app.schemas.records import AssessmentIn, AssessmentOut, AssessmentVersionOut
from app.schemas.scores import Scores
from app.services.pagination import cursor_datetime, decode_cursor, encode_cursor
from app.services.patients import ensure_patient
from app.services.scoring import ComputedScores
from app.services.versioning import add_version, affected_rows, check_if_match, versions_of

RESOURCE = "assessment"
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


def to_out(row: Assessment) -> AssessmentOut:
    return AssessmentOut.model_validate(
        {
            **row.content,
            "id": row.id,
            "patient_id": row.patient_id,
            "version": row.version,
            "status": "entered-in-error" if row.entered_in_error else "active",
            "recorded_at": row.recorded_at,
            "updated_at": row.updated_at,
            "scores": row.scores,
        }
    )


def _active_baseline(session: Session, patient_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(
        select(Assessment.id).where(
            Assessment.patient_id == patient_id,
            Assessment.is_baseline.is_(True),
            Assessment.entered_in_error.is_(False),
        )
    )


def _baseline_conflict(holder: uuid.UUID | None) -> BaselineExists:
    return BaselineExists(
        f"assessment {holder} is already this patient's active baseline; amend it "
        "(is_baseline false) before flagging another",
        assessment_id=str(holder) if holder else None,
    )


@contextmanager
def _guarding_baseline(
    session: Session, patient_id: uuid.UUID, flags_baseline: bool
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
        raise _baseline_conflict(_active_baseline(session, patient_id)) from None


_INSERT_ASSESSMENT = insert(table_of(Assessment))


def create_assessment(
    session: Session,
    patient_id: uuid.UUID,
    body: AssessmentIn,
    computed: ComputedScores,
    recorded_by: str,
) -> Assessment:
    ensure_patient(session, patient_id)
    if body.is_baseline:
        holder = _active_baseline(session, patient_id)
        if holder is not None:
            raise _baseline_conflict(holder)
    now = datetime.now(UTC)
    content = content_of(body)
    scores = computed.scores.model_dump(mode="json")
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "patient_id": patient_id,
        "version": 1,
        "entered_in_error": False,
        "assessed_on": body.assessed_on,
        "recorded_at": now,
        "updated_at": now,
        "visit": body.visit,
        "is_baseline": body.is_baseline,
        "pasi_tenths": computed.pasi_tenths,
        "bsa_percent": computed.bsa_percent,
        "iga": computed.iga,
        "content": content,
        "scores": scores,
    }
    with _guarding_baseline(session, patient_id, body.is_baseline):
        session.connection().execute(_INSERT_ASSESSMENT, values)
    row = Assessment(**values)  # transient: only to shape the response
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
        scores=scores,
    )
    return row


def require_assessment(session: Session, assessment_id: uuid.UUID) -> Assessment:
    row = session.get(Assessment, assessment_id)
    if row is None:
        raise NotFound(f"no assessment {assessment_id}")
    return row


def amend_assessment(
    session: Session,
    assessment_id: uuid.UUID,
    body: AssessmentIn,
    computed: ComputedScores,
    reason: str,
    if_match: str | None,
    recorded_by: str,
) -> Assessment:
    row = require_assessment(session, assessment_id)
    check_if_match(if_match, row.version, required=True)
    if row.entered_in_error:
        raise Conflict(f"assessment {assessment_id} is entered-in-error and cannot be amended")
    if body.is_baseline and not row.is_baseline:
        holder = _active_baseline(session, row.patient_id)
        if holder is not None and holder != row.id:
            raise _baseline_conflict(holder)
    now = datetime.now(UTC)
    content = content_of(body)
    scores = computed.scores.model_dump(mode="json")
    new_version = row.version + 1
    # Compare-and-set on the version: of concurrent amendments with the same If-Match, exactly
    # one updates the row; the others find it changed and get 412.
    with _guarding_baseline(session, row.patient_id, body.is_baseline and not row.is_baseline):
        changed = affected_rows(
            session.execute(
                update(Assessment)
                .where(Assessment.id == row.id, Assessment.version == row.version)
                .values(
                    version=new_version,
                    updated_at=now,
                    assessed_on=body.assessed_on,
                    visit=body.visit,
                    is_baseline=body.is_baseline,
                    pasi_tenths=computed.pasi_tenths,
                    bsa_percent=computed.bsa_percent,
                    iga=computed.iga,
                    content=content,
                    scores=scores,
                )
                .execution_options(synchronize_session=False)
            )
        )
    if changed != 1:
        session.expire(row)
        check_if_match(if_match, require_assessment(session, assessment_id).version, required=True)
    add_version(
        session,
        resource_type=RESOURCE,
        resource_id=row.id,
        version=new_version,
        action="amend",
        recorded_at=now,
        recorded_by=recorded_by,
        reason=reason,
        entered_in_error=False,
        content=content,
        scores=scores,
    )
    session.refresh(row)
    return row


def mark_entered_in_error(
    session: Session,
    assessment_id: uuid.UUID,
    reason: str,
    if_match: str | None,
    recorded_by: str,
) -> Assessment:
    row = require_assessment(session, assessment_id)
    check_if_match(if_match, row.version, required=False)
    if row.entered_in_error:
        return row
    now = datetime.now(UTC)
    new_version = row.version + 1
    changed = affected_rows(
        session.execute(
            update(Assessment)
            .where(Assessment.id == row.id, Assessment.version == row.version)
            .values(version=new_version, updated_at=now, entered_in_error=True)
            .execution_options(synchronize_session=False)
        )
    )
    if changed != 1:
        session.expire(row)
        check_if_match(
            f'"{row.version}"', require_assessment(session, assessment_id).version, required=True
        )
    add_version(
        session,
        resource_type=RESOURCE,
        resource_id=row.id,
        version=new_version,
        action="entered-in-error",
        recorded_at=now,
        recorded_by=recorded_by,
        reason=reason,
        entered_in_error=True,
        content=row.content,
        scores=row.scores,
    )
    session.refresh(row)
    return row


def history(session: Session, row: Assessment) -> list[AssessmentVersionOut]:
    return [
        AssessmentVersionOut.model_validate(
            {
                **v.content,
                "version": v.version,
                "action": v.action,
                "recorded_at": v.recorded_at,
                "recorded_by": v.recorded_by,
                "reason": v.reason,
                "status": "entered-in-error" if v.entered_in_error else "active",
                "scores": None if v.scores is None else Scores.model_validate(v.scores),
            }
        )
        for v in versions_of(session, RESOURCE, row.id)
    ]


def list_assessments(
    session: Session,
    patient_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    from_date: date | None,
    to_date: date | None,
    visit: str | None,
) -> Page[AssessmentOut]:
    ensure_patient(session, patient_id)
    query = (
        select(Assessment)
        .where(Assessment.patient_id == patient_id, Assessment.entered_in_error.is_(False))
        .order_by(Assessment.assessed_on, Assessment.recorded_at, Assessment.id)
        .limit(limit + 1)
    )
    if from_date is not None:
        query = query.where(Assessment.assessed_on >= from_date)
    if to_date is not None:
        query = query.where(Assessment.assessed_on <= to_date)
    if visit is not None:
        query = query.where(Assessment.visit == visit)
    if cursor:
        values = decode_cursor(cursor, 3)
        try:
            after = (
                date.fromisoformat(values[0]),
                cursor_datetime(values[1]),
                uuid.UUID(values[2]),
            )
        except (TypeError, ValueError):
            raise InvalidParameter("cursor", "is not a cursor this service issued") from None
        query = query.where(
            tuple_(Assessment.assessed_on, Assessment.recorded_at, Assessment.id) > after
        )
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = encode_cursor(
            [last.assessed_on.isoformat(), last.recorded_at.isoformat(), str(last.id)]
        )
    return Page[AssessmentOut](items=[to_out(r) for r in rows], next_cursor=next_cursor)
