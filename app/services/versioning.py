"""Versioned records: ETags, If-Match, and the append-only `record_versions` history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Result, insert, select
from sqlalchemy.orm import Session

from app.db.models import RecordVersion, table_of
from app.errors import PreconditionFailed, PreconditionRequired

# Built once: building a statement with literal values costs more than running it.
_INSERT_VERSION = insert(table_of(RecordVersion))


def affected_rows(result: Result[Any]) -> int:
    """Rows changed by an UPDATE/DELETE (DML results are CursorResults)."""
    return int(cast(CursorResult[Any], result).rowcount)


def etag(version: int) -> str:
    return f'"{version}"'


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
    raise PreconditionFailed(
        f"If-Match {if_match} does not match the current ETag {etag(current_version)}; "
        "read the record again and reapply your change",
        current_etag=etag(current_version),
    )


def add_version(
    session: Session,
    *,
    resource_type: str,
    resource_id: uuid.UUID,
    version: int,
    action: str,
    recorded_at: datetime,
    recorded_by: str,
    reason: str | None,
    entered_in_error: bool,
    content: dict[str, Any],
    scores: dict[str, Any] | None,
) -> None:
    session.connection().execute(
        _INSERT_VERSION,
        {
            "resource_type": resource_type,
            "resource_id": resource_id,
            "version": version,
            "action": action,
            "recorded_at": recorded_at,
            "recorded_by": recorded_by,
            "reason": reason,
            "entered_in_error": entered_in_error,
            "content": content,
            "scores": scores,
        },
    )


def versions_of(
    session: Session, resource_type: str, resource_id: uuid.UUID
) -> list[RecordVersion]:
    return list(
        session.scalars(
            select(RecordVersion)
            .where(
                RecordVersion.resource_type == resource_type,
                RecordVersion.resource_id == resource_id,
            )
            .order_by(RecordVersion.version)
        )
    )
