"""Organizations: the custodians of patients (a clinic, a department, a study team), and which
of them a caller's new patient or key belongs to."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Organization
from app.errors import Conflict, InvalidInput
from app.services.pagination import cursor_datetime, cursor_uuid, decode_cursor, encode_cursor


@dataclass(frozen=True, slots=True)
class OrganizationInfo:
    id: uuid.UUID
    name: str


def create_organization(session: Session, name: str) -> OrganizationInfo:
    if session.scalar(select(Organization.id).where(Organization.name == name)) is not None:
        raise Conflict(f"an organization named {name!r} already exists")
    row = Organization(id=uuid.uuid4(), name=name, created_at=datetime.now(UTC))
    session.add(row)
    session.flush()
    return OrganizationInfo(row.id, row.name)


def list_organizations(
    session: Session, limit: int, cursor: str | None
) -> tuple[list[OrganizationInfo], str | None]:
    query = select(Organization).order_by(Organization.created_at, Organization.id)
    if cursor:
        created_at, org_id = decode_cursor(cursor, 2)
        after = (cursor_datetime(created_at), cursor_uuid(org_id))
        query = query.where(tuple_(Organization.created_at, Organization.id) > after)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    next_cursor = (
        encode_cursor([last.created_at.isoformat(), str(last.id)]) if more and last else None
    )
    return [OrganizationInfo(r.id, r.name) for r in rows], next_cursor


def all_organization_ids(session: Session) -> list[uuid.UUID]:
    return list(session.scalars(select(Organization.id).order_by(Organization.created_at)))


def organization_for_new_patient(
    session: Session, access: Access, requested: uuid.UUID | None
) -> uuid.UUID:
    """The organization a new patient goes into: the one named, which the caller must hold, or
    the caller's only one (an admin key's only one when the deployment has a single one)."""
    held = (
        set(all_organization_ids(session))
        if access.organization_ids is None
        else set(access.organization_ids)
    )
    if requested is not None:
        if requested not in held:
            raise InvalidInput(
                "/organization_id",
                "is not an organization this API key holds"
                if access.organization_ids is not None
                else "is not an organization of this service",
            )
        return requested
    if len(held) == 1:
        return next(iter(held))
    raise InvalidInput(
        "/organization_id",
        f"is required: this API key holds {len(held)} organizations; name one of them",
    )


def organizations_for_new_key(
    session: Session, requested: Sequence[uuid.UUID] | None, *, admin: bool, pointer: str
) -> list[uuid.UUID]:
    """A non-admin key holds one or more organizations (the deployment's only one when none is
    named); an admin key spans all and names none."""
    if admin:
        if requested:
            raise InvalidInput(pointer, "must be left out for an admin key (it spans all)")
        return []
    existing = all_organization_ids(session)
    if not requested:
        if len(existing) == 1:
            return existing
        raise InvalidInput(
            pointer, f"is required: this service has {len(existing)} organizations; name them"
        )
    known = set(existing)
    for n, org_id in enumerate(requested):
        if org_id not in known:
            raise InvalidInput(f"{pointer}/{n}", "is not an organization of this service")
    return list(dict.fromkeys(requested))
