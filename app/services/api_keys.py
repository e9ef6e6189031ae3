"""Create, list, revoke and verify API keys (stored only as salted hashes)."""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.auth.keys import Scope, generate_key, parse_scopes, parse_token, secret_matches
from app.db.database import Database
from app.db.models import ApiKey
from app.errors import Conflict, NotFound

log = logging.getLogger("app.auth")
BOOTSTRAP_KEY_FILE = "admin-api-key.txt"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.scopes.split(), row.created_at, row.revoked_at)


def create_key(session: Session, name: str, scopes: frozenset[Scope]) -> tuple[KeyInfo, str]:
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise Conflict(f"an API key named {name!r} already exists")
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
    return _info(row), new.token


def list_keys(session: Session) -> list[KeyInfo]:
    return [_info(r) for r in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]


def revoke_key(session: Session, key_id: uuid.UUID) -> KeyInfo:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id}")
    if row.revoked_at is None:
        session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=datetime.now(UTC))
        )
        session.refresh(row)
    return _info(row)


# Built once (every request runs it).
_ACTIVE_KEY = select(ApiKey.name, ApiKey.scopes, ApiKey.salt, ApiKey.secret_hash).where(
    ApiKey.id == bindparam("key_id"), ApiKey.revoked_at.is_(None)
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
    return Access(key_id, row.name, parse_scopes(row.scopes))


def bootstrap_admin_key(db: Database, data_dir: Path) -> str | None:
    """On first start with no keys at all, create an admin key, write it to an owner-only file
    and return it (to be printed once)."""
    with db.transaction() as session:
        if session.scalar(select(func.count()).select_from(ApiKey)):
            return None
        _info_row, token = create_key(session, "bootstrap-admin", frozenset(Scope))
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / BOOTSTRAP_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token
