"""Versioned records (assessments, treatments): one compare-and-set helper for every change.

A record's row holds its current version (for querying); `record_versions` holds every version
ever written, with who, when and why (for history). Every change goes through `new_version`: an
UPDATE guarded by the version the writer read, so that of concurrent writers exactly one wins
and the others get 412 (never a duplicate version, never a 500). ETags are built here only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Insert, Result, Select, insert, select, tuple_, update
from sqlalchemy.orm import Session

from app.db.models import Assessment, RecordVersion, Treatment, table_of
from app.errors import Conflict, PreconditionFailed, PreconditionRequired
from app.services.pagination import (
    cursor_date,
    cursor_datetime,
    cursor_int,
    cursor_uuid,
    decode_cursor,
    encode_cursor,
)

VersionedRow = Assessment | Treatment
R = TypeVar("R", Assessment, Treatment)

# Built once: building a statement with literal values costs more than running it.
_INSERT_VERSION = insert(table_of(RecordVersion))
_INSERT_ROW: dict[type[VersionedRow], Insert] = {
    Assessment: insert(table_of(Assessment)),
    Treatment: insert(table_of(Treatment)),
}
RESOURCE_TYPE: dict[type[VersionedRow], str] = {Assessment: "assessment", Treatment: "treatment"}


def affected_rows(result: Result[Any]) -> int:
    """Rows changed by an UPDATE/DELETE (DML results are CursorResults)."""
    return int(cast(CursorResult[Any], result).rowcount)


def etag(version: int) -> str:
    return f'"{version}"'


def _stale(if_match: str, current_version: int) -> PreconditionFailed:
    return PreconditionFailed(
        f"If-Match {if_match} does not match the current ETag {etag(current_version)}; "
        "read the record again and reapply your change",
        current_etag=etag(current_version),
    )


def check_if_match(if_match: str | None, current_version: int, *, required: bool) -> None:
    if if_match is None:
        if required:
            raise PreconditionRequired(
                "send If-Match with the ETag from your last read of this record"
            )
        return
    candidates = [c.strip() for c in if_match.split(",")]
    if "*" in candidates or etag(current_version) in candidates:
        return
    raise _stale(if_match, current_version)


def _columns(row: VersionedRow | Mapping[str, Any]) -> Callable[[str], Any]:
    """A record's column by name, from its row or from a new record's column values."""
    return row.__getitem__ if isinstance(row, Mapping) else partial(getattr, row)


def _version_of(
    model: type[VersionedRow],
    row: VersionedRow | Mapping[str, Any],
    *,
    action: str,
    recorded_at: datetime,
    recorded_by: str,
    reason: str | None,
) -> dict[str, Any]:
    column = _columns(row)
    return {
        "resource_type": RESOURCE_TYPE[model],
        "resource_id": column("id"),
        "version": column("version"),
        "action": action,
        "recorded_at": recorded_at,
        "recorded_by": recorded_by,
        "reason": reason,
        "entered_in_error": column("entered_in_error"),
        "content": column("content"),
        "scores": column("scores") if model is Assessment else None,
    }


def _add_version(
    session: Session,
    row: VersionedRow,
    *,
    action: str,
    recorded_at: datetime,
    recorded_by: str,
    reason: str | None,
) -> None:
    session.connection().execute(
        _INSERT_VERSION,
        _version_of(
            type(row),
            row,
            action=action,
            recorded_at=recorded_at,
            recorded_by=recorded_by,
            reason=reason,
        ),
    )


def create_record(
    session: Session,
    model: type[VersionedRow],
    values: dict[str, Any],
    recorded_by: str,
    guard: AbstractContextManager[None] | None = None,
) -> dict[str, Any]:
    """Insert version 1 of a record and its history entry; returns the row's columns (for
    `record_fields`: no ORM object is built for a row that is only answered with).
    `values` holds every column but the bookkeeping ones, which are set here."""
    row_values, version_values = first_version(model, values, recorded_by)
    with guard or nullcontext():  # a savepoint is emitted by the first connection() inside it
        session.connection().execute(_INSERT_ROW[model], row_values)
    session.connection().execute(_INSERT_VERSION, version_values)
    return row_values


def first_version(
    model: type[VersionedRow], values: dict[str, Any], recorded_by: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row and history entry of a new record's version 1, as column values (a batch
    inserts many of them with one statement each: `insert_first_versions`)."""
    now = datetime.now(UTC)
    row = {
        "id": uuid.uuid4(),
        "version": 1,
        "entered_in_error": False,
        "recorded_at": now,
        "updated_at": now,
        **values,
    }
    version = _version_of(
        model, row, action="create", recorded_at=now, recorded_by=recorded_by, reason=None
    )
    return row, version


def insert_first_versions(
    session: Session,
    model: type[VersionedRow],
    rows: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    """Many `first_version`s: the rows, then their history entries, two statements in all."""
    if rows:
        connection = session.connection()
        connection.execute(_INSERT_ROW[model], [row for row, _ in rows])
        connection.execute(_INSERT_VERSION, [version for _, version in rows])


def _new_version(
    session: Session,
    row: VersionedRow,
    *,
    action: str,
    changes: dict[str, Any],
    reason: str,
    recorded_by: str,
    guard: AbstractContextManager[None] | None = None,
) -> None:
    """Compare-and-set on the version the caller read: exactly one of concurrent writers
    updates the row; the others find it changed and get 412."""
    model = type(row)
    read_version = row.version
    now = datetime.now(UTC)
    with guard or nullcontext():
        changed = affected_rows(
            session.execute(
                update(model)
                .where(model.id == row.id, model.version == read_version)
                .values(version=read_version + 1, updated_at=now, **changes)
                .execution_options(synchronize_session=False)
            )
        )
    session.refresh(row)
    if changed != 1:
        raise _stale(etag(read_version), row.version)
    _add_version(
        session, row, action=action, recorded_at=now, recorded_by=recorded_by, reason=reason
    )


def check_amendable(row: VersionedRow, if_match: str | None) -> None:
    """412/428 unless If-Match names the current version; 409 for an entered-in-error record."""
    check_if_match(if_match, row.version, required=True)
    if row.entered_in_error:
        raise Conflict(
            f"{RESOURCE_TYPE[type(row)]} {row.id} is entered-in-error and cannot be amended"
        )


def amend(
    session: Session,
    row: VersionedRow,
    *,
    if_match: str | None,
    changes: dict[str, Any],
    reason: str,
    recorded_by: str,
    guard: AbstractContextManager[None] | None = None,
) -> None:
    """A new version with new content (If-Match required)."""
    check_amendable(row, if_match)
    _new_version(
        session,
        row,
        action="amend",
        changes=changes,
        reason=reason,
        recorded_by=recorded_by,
        guard=guard,
    )


def mark_entered_in_error(
    session: Session, row: VersionedRow, *, if_match: str | None, reason: str, recorded_by: str
) -> None:
    """A new version marked entered-in-error (If-Match optional). Marking a record that already
    is, including one a concurrent request has just marked, changes nothing and succeeds."""
    check_if_match(if_match, row.version, required=False)
    if row.entered_in_error:
        return
    try:
        _new_version(
            session,
            row,
            action="entered-in-error",
            changes={"entered_in_error": True},
            reason=reason,
            recorded_by=recorded_by,
        )
    except PreconditionFailed:
        if not row.entered_in_error:
            raise


def record_fields(row: VersionedRow | Mapping[str, Any]) -> dict[str, Any]:
    """The current version of a record as its output model's fields, from its row or from
    the columns `create_record` returned."""
    column = _columns(row)
    fields = {
        **column("content"),
        "id": column("id"),
        "patient_id": column("patient_id"),
        "version": column("version"),
        "status": "entered-in-error" if column("entered_in_error") else "active",
        "recorded_at": column("recorded_at"),
        "updated_at": column("updated_at"),
    }
    if isinstance(row, Assessment) or (isinstance(row, Mapping) and "scores" in row):
        fields["scores"] = column("scores")
    return fields


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a record's versions, oldest first; `next_cursor` continues after it."""

    patient_id: uuid.UUID
    items: list[dict[str, Any]]
    next_cursor: str | None


def history_page(
    session: Session, row: VersionedRow, limit: int, cursor: str | None
) -> HistoryPage:
    """A page of a record's versions, as its version model's fields (keyset on the version)."""
    query = (
        select(RecordVersion)
        .where(
            RecordVersion.resource_type == RESOURCE_TYPE[type(row)],
            RecordVersion.resource_id == row.id,
        )
        .order_by(RecordVersion.version)
        .limit(limit + 1)
    )
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(RecordVersion.version > cursor_int(after))
    versions = list(session.scalars(query))
    more = len(versions) > limit
    versions = versions[:limit]
    items = []
    for v in versions:
        fields = {
            **v.content,
            "version": v.version,
            "action": v.action,
            "recorded_at": v.recorded_at,
            "recorded_by": v.recorded_by,
            "reason": v.reason,
            "status": "entered-in-error" if v.entered_in_error else "active",
        }
        if isinstance(row, Assessment):
            fields["scores"] = v.scores
        items.append(fields)
    next_cursor = encode_cursor([versions[-1].version]) if more else None
    return HistoryPage(row.patient_id, items, next_cursor)


def record_page(
    session: Session,
    query: Select[tuple[R]],
    model: type[R],
    day: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[R], str | None]:
    """One keyset page of records ordered by their clinical date (`day`: `assessed_on`,
    `started_on`), then when they were recorded, then id; and the cursor after it, if more."""
    columns = (getattr(model, day), model.recorded_at, model.id)
    query = query.order_by(*columns).limit(limit + 1)
    if cursor:
        on, recorded_at, record_id = decode_cursor(cursor, 3)
        after = (cursor_date(on), cursor_datetime(recorded_at), cursor_uuid(record_id))
        query = query.where(tuple_(*columns) > after)
    rows = list(session.scalars(query))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor(
        [getattr(last, day).isoformat(), last.recorded_at.isoformat(), str(last.id)]
    )
