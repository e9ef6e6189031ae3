"""Append-only audit of access to patient data, written in the request's own transaction so that
a failure to audit fails the request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.db.models import AuditEvent, table_of
from app.errors import InvalidParameter
from app.services.pagination import decode_cursor, encode_cursor


@dataclass(frozen=True, slots=True)
class AuditInfo:
    action: str
    patient_id: uuid.UUID | None = None
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "action": self.action,
            "patient_id": None if self.patient_id is None else str(self.patient_id),
            "resource_type": self.resource_type,
            "resource_id": None if self.resource_id is None else str(self.resource_id),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditInfo:
        def as_uuid(value: Any) -> uuid.UUID | None:
            return None if value is None else uuid.UUID(str(value))

        return cls(
            action=str(data["action"]),
            patient_id=as_uuid(data.get("patient_id")),
            resource_type=data.get("resource_type"),
            resource_id=as_uuid(data.get("resource_id")),
        )


# Built once: building a statement with literal values costs more than running it.
_INSERT_EVENT = insert(table_of(AuditEvent))


def record(
    session: Session, key_name: str, method: str, route: str, info: AuditInfo, status: int
) -> None:
    session.connection().execute(
        _INSERT_EVENT,
        {
            "occurred_at": datetime.now(UTC),
            "key_name": key_name,
            "action": info.action,
            "method": method,
            "route": route,
            "patient_id": info.patient_id,
            "resource_type": info.resource_type,
            "resource_id": info.resource_id,
            "status": status,
        },
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    patient_id: uuid.UUID | None = None
    key_name: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_events(
    session: Session, where: AuditFilter, limit: int, cursor: str | None
) -> tuple[list[AuditEvent], str | None]:
    """Events in the order they were written, filtered, one keyset page at a time."""
    query = select(AuditEvent).order_by(AuditEvent.id).limit(limit + 1)
    if where.patient_id is not None:
        query = query.where(AuditEvent.patient_id == where.patient_id)
    if where.key_name is not None:
        query = query.where(AuditEvent.key_name == where.key_name)
    if where.action is not None:
        query = query.where(AuditEvent.action == where.action)
    for name, value in (("since", where.since), ("until", where.until)):
        if value is not None and value.tzinfo is None:
            raise InvalidParameter(
                name, "must include a time zone offset, e.g. 2026-01-01T00:00:00Z"
            )
    if where.since is not None:
        query = query.where(AuditEvent.occurred_at >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.occurred_at < where.until)
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        if not isinstance(last_id, int):
            raise InvalidParameter("cursor", "is not a cursor this service issued")
        query = query.where(AuditEvent.id > last_id)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor([rows[-1].id]) if more else None
