"""Create, list, revoke and verify API keys (stored only as salted hashes)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.auth.keys import Scope, generate_key, parse_scopes, parse_token, secret_matches
from app.db.database import Database
from app.db.models import ApiKey, ApiKeyOrganization
from app.errors import Conflict, NotFound
from app.services.organizations import organizations_for_new_key

log = logging.getLogger("app.auth")
BOOTSTRAP_KEY_FILE = "admin-api-key.txt"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    organizations: list[uuid.UUID]


def _info(row: ApiKey, organizations: Sequence[uuid.UUID]) -> KeyInfo:
    return KeyInfo(
        row.id, row.name, row.scopes.split(), row.created_at, row.revoked_at, list(organizations)
    )


def _organizations_of(
    session: Session, key_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    held: dict[uuid.UUID, list[uuid.UUID]] = {k: [] for k in key_ids}
    if key_ids:
        rows = session.execute(
            select(ApiKeyOrganization.key_id, ApiKeyOrganization.organization_id).where(
                ApiKeyOrganization.key_id.in_(list(key_ids))
            )
        )
        for key_id, org_id in rows:
            held[key_id].append(org_id)
    return held


def create_key(
    session: Session,
    name: str,
    scopes: frozenset[Scope],
    organizations: Sequence[uuid.UUID] | None = None,
    *,
    pointer: str = "/organizations",
) -> tuple[KeyInfo, str]:
    """A new key (its token is returned once). Non-admin keys are bound to `organizations`
    (the deployment's only one when none is named)."""
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise Conflict(f"an API key named {name!r} already exists")
    org_ids = organizations_for_new_key(
        session, organizations, admin=Scope.ADMIN in scopes, pointer=pointer
    )
    new = generate_key()
    row = ApiKey(
        id=new.key_id,
        name=name,
        scopes=" ".join(sorted(scopes)),
        salt=new.salt,
        secret_hash=new.secret_hash,
        created_at=datetime.now(UTC),
        revoked_at=None,
    )
    session.add(row)
    session.flush()
    session.add_all(ApiKeyOrganization(key_id=row.id, organization_id=o) for o in org_ids)
    session.flush()
    return _info(row, org_ids), new.token


def list_keys(session: Session) -> list[KeyInfo]:
    rows = list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
    held = _organizations_of(session, [r.id for r in rows])
    return [_info(r, held[r.id]) for r in rows]


def revoke_key(session: Session, key_id: uuid.UUID) -> KeyInfo:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id}")
    if row.revoked_at is None:
        session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=datetime.now(UTC))
        )
        session.refresh(row)
    return _info(row, _organizations_of(session, [row.id])[row.id])


# Built once (every request runs it).
_ACTIVE_KEY = select(ApiKey.name, ApiKey.scopes, ApiKey.salt, ApiKey.secret_hash).where(
    ApiKey.id == bindparam("key_id"), ApiKey.revoked_at.is_(None)
)
_KEY_ORGANIZATIONS = select(ApiKeyOrganization.organization_id).where(
    ApiKeyOrganization.key_id == bindparam("key_id")
)


def verify_token(session: Session, token: str) -> Access | None:
    """The caller a token belongs to, or None (a revoked key is None). The API layer caches what
    this returns for a few seconds (`KeyCache`), so revocation reaches other workers within
    that time."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = session.connection().execute(_ACTIVE_KEY, {"key_id": key_id}).one_or_none()
    if row is None or not secret_matches(row.salt, secret, row.secret_hash):
        return None
    scopes = parse_scopes(row.scopes)
    organizations = None
    if Scope.ADMIN not in scopes:
        organizations = frozenset(
            session.connection().execute(_KEY_ORGANIZATIONS, {"key_id": key_id}).scalars()
        )
    return Access(key_id, row.name, scopes, organizations)


def bootstrap_admin_key(db: Database, data_dir: Path) -> str | None:
    """On first start with no keys at all, create an admin key, write it to an owner-only file
    and return it (to be printed once)."""
    with db.transaction() as session:
        if session.scalar(select(func.count()).select_from(ApiKey)):
            return None
        _info_row, token = create_key(session, "bootstrap-admin", frozenset(Scope))
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / BOOTSTRAP_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token
