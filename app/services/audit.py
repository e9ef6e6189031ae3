"""Append-only audit of access to patient data, written in the request's own transaction so that
a failure to audit fails the request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.db.models import AuditEvent, table_of


@dataclass(frozen=True, slots=True)
class AuditInfo:
    action: str
    patient_id: uuid.UUID | None = None
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None


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
