"""Tables. Clinical records are versioned, never overwritten: the row holds the current version
(for querying) and `record_versions` holds every version ever written (for history)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Integer primary keys that autoincrement on both SQLite (INTEGER) and PostgreSQL (BIGINT).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def table_of(model: type[Base]) -> Table:
    """A model's Table, for prebuilt Core statements on hot paths."""
    return cast(Table, model.__table__)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # PostgreSQL, whose sessions are set to UTC (app.db.database)
            return value
        if value.tzinfo is None:  # SQLite stores UTC wall time without an offset
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)  # a session in another time zone


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Organization(Base):
    """The custodian of a set of patients: a clinic, a department or a study team (FHIR
    `Patient.managingOrganization`)."""

    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]


DEFAULT_ORGANIZATION_NAME = "default"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiKeyOrganization(Base):
    """The organizations a non-admin key holds (an admin key spans all and has none here)."""

    __tablename__ = "api_key_organizations"

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), primary_key=True, index=True
    )


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    sex: Mapped[str | None] = mapped_column(String(20))
    birth_year: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    # Bumped by triggers on every INSERT and UPDATE of the patient's assessments and treatments
    # (migration 0007): the outcomes cache's key.
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class PatientIdentifier(Base):
    __tablename__ = "patient_identifiers"
    # Identifiers are unique within an organization (two clinics may both have an MRN 123).
    __table_args__ = (
        UniqueConstraint(
            "organization_id", "system", "value", name="uq_patient_identifiers_org_system_value"
        ),
        Index("ix_patient_identifiers_system_value", "system", "value"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT")
    )
    system: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
    position: Mapped[int] = mapped_column(Integer)


class Assessment(Base):
    __tablename__ = "assessments"
    __table_args__ = (
        Index(
            "ix_assessments_patient_order",
            "patient_id",
            "entered_in_error",
            "assessed_on",
            "recorded_at",
            "id",
        ),
        # At most one active baseline per patient, enforced by the database so that two
        # concurrent writers cannot both succeed.
        Index(
            "uq_assessments_one_active_baseline",
            "patient_id",
            unique=True,
            sqlite_where=text("is_baseline = 1 AND entered_in_error = 0"),
            postgresql_where=text("is_baseline AND NOT entered_in_error"),
        ),
        # The outcomes cache's revision (count and version sum) read from the index alone.
        Index("ix_assessments_patient_version", "patient_id", "version"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    entered_in_error: Mapped[bool] = mapped_column(Boolean, default=False)
    assessed_on: Mapped[date] = mapped_column(Date)
    recorded_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    visit: Mapped[str | None] = mapped_column(String(100))
    is_baseline: Mapped[bool] = mapped_column(Boolean)
    pasi_tenths: Mapped[int] = mapped_column(Integer)
    bsa_percent: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    iga: Mapped[int | None] = mapped_column(Integer)
    content: Mapped[dict[str, Any]]
    scores: Mapped[dict[str, Any]]


class Treatment(Base):
    __tablename__ = "treatments"
    __table_args__ = (
        Index("ix_treatments_patient_order", "patient_id", "started_on", "id"),
        Index("ix_treatments_patient_version", "patient_id", "version"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    entered_in_error: Mapped[bool] = mapped_column(Boolean, default=False)
    started_on: Mapped[date] = mapped_column(Date)
    ended_on: Mapped[date | None] = mapped_column(Date)
    recorded_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    content: Mapped[dict[str, Any]]


class RecordVersion(Base):
    """Every version of every versioned record: who wrote it, when (server UTC) and why."""

    __tablename__ = "record_versions"
    __table_args__ = (
        UniqueConstraint(
            "resource_type", "resource_id", "version", name="uq_record_versions_resource_version"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(20))
    resource_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(1000))
    entered_in_error: Mapped[bool] = mapped_column(Boolean)
    content: Mapped[dict[str, Any]]
    scores: Mapped[dict[str, Any] | None]


class IdempotencyKey(Base):
    """A claimed `Idempotency-Key`; the unique constraint, not a read-then-insert, decides
    who owns it."""

    __tablename__ = "idempotency_keys"
    # One key names one request of its owner (method and canonical path are checked on reuse).
    __table_args__ = (UniqueConstraint("owner", "key", name="uq_idempotency_keys_owner_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(index=True)
    lease_until: Mapped[datetime]
    # The fencing token of the claim that holds the key: a takeover replaces it, so the
    # request that lost the key cannot store its answer (nor commit its work).
    token: Mapped[str] = mapped_column(String(32))
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    response_headers: Mapped[dict[str, Any] | None]
    # What the first request audited, so that a replay (which returns patient data too) is
    # audited alike.
    response_audit: Mapped[dict[str, Any] | None]


class AuditEvent(Base):
    """Append-only, hash-chained log of who read or wrote which patient's data, and of key,
    organization and audit administration (`app.db.audit_chain`)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_patient", "patient_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    key_name: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(String(10))
    route: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    resource_type: Mapped[str | None] = mapped_column(String(20))
    resource_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status: Mapped[int] = mapped_column(Integer)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    prev_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditEventPatient(Base):
    """Every patient an event touched (a search or list touches each patient it returned), so
    that "who saw patient X" is one indexed lookup."""

    __tablename__ = "audit_event_patients"
    __table_args__ = (Index("ix_audit_event_patients_patient", "patient_id", "event_id"),)

    event_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("audit_events.id", ondelete="RESTRICT"), primary_key=True
    )
    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
