"""Append-only audit of access to patient data, written in the request's own transaction so that
a failure to audit fails the request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.db.models import AuditEvent, table_of


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
