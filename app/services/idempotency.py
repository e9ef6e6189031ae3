"""Idempotency keys, claimed through a unique index (not read-then-insert).

1. Claim: insert (owner, method, path, key) with the request hash and a lease, in its own short
   transaction. A unique violation means someone used the key before: replay their stored
   response (same hash), refuse a different body (422), or answer 409 while it is in flight.
2. The write and the stored response commit in ONE transaction, so a crash leaves either both
   or neither; a claim whose request died is taken over once its lease expires.
3. A request that fails (validation, 404, 409...) releases its claim: failures are not remembered.

`run_once` is the whole protocol in one function, so that a v1 POST, a batch item and a FHIR
create run the very same code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.database import Database
from app.db.models import IdempotencyKey
from app.errors import IdempotencyInFlight, IdempotencyKeyReused, InvalidParameter
from app.services.versioning import affected_rows

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: str
    headers: dict[str, str]
    audit: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    claim_id: int


@dataclass(frozen=True, slots=True)
class KeyScope:
    """A key is unique per owner (the API key's name), method and path."""

    owner: str
    method: str
    path: str
    key: str


@dataclass(frozen=True, slots=True)
class Policy:
    lease_seconds: int
    retention: timedelta


def request_hash(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidParameter(
            "Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return key


def run_once(
    db: Database,
    scope: KeyScope,
    digest: str,
    work: Callable[[Session], StoredResponse],
    policy: Policy,
    on_replay: Callable[[Session, StoredResponse], None],
) -> tuple[StoredResponse, bool]:
    """Run `work` at most once per key: its answer and the stored copy commit together. A
    replay returns the first answer (and `True`) after `on_replay` (its audit) commits."""
    outcome = claim(db, scope, digest, policy)
    if isinstance(outcome, StoredResponse):
        with db.transaction() as session:
            on_replay(session, outcome)
        return outcome, True
    try:
        with db.transaction() as session:
            response = work(session)
            complete(session, outcome, response)
    except BaseException:
        release(db, outcome)
        raise
    return response, False


def claim(db: Database, key_scope: KeyScope, digest: str, policy: Policy) -> Claim | StoredResponse:
    now = datetime.now(UTC)
    lease_until = now + timedelta(seconds=policy.lease_seconds)
    retention = policy.retention
    owner, method, path, key = key_scope.owner, key_scope.method, key_scope.path, key_scope.key
    scope = (
        IdempotencyKey.owner == owner,
        IdempotencyKey.method == method,
        IdempotencyKey.path == path,
        IdempotencyKey.key == key,
    )
    with db.transaction() as session:
        try:
            with session.begin_nested():
                new_id = session.scalar(
                    insert(IdempotencyKey)
                    .values(
                        owner=owner,
                        method=method,
                        path=path,
                        key=key,
                        request_hash=digest,
                        created_at=now,
                        lease_until=lease_until,
                    )
                    .returning(IdempotencyKey.id)
                )
            assert new_id is not None
            return Claim(new_id)
        except IntegrityError:
            pass
        row = session.execute(select(IdempotencyKey).where(*scope)).scalar_one()
        if row.created_at < now - retention:
            # Expired: forget the old use and claim afresh.
            session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == row.id)
                .values(
                    request_hash=digest,
                    created_at=now,
                    lease_until=lease_until,
                    response_status=None,
                    response_body=None,
                    response_headers=None,
                    response_audit=None,
                )
            )
            return Claim(row.id)
        if row.request_hash != digest:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request body; use a new key"
            )
        if row.response_status is not None:
            return StoredResponse(
                row.response_status,
                row.response_body or "",
                dict(row.response_headers or {}),
                row.response_audit,
            )
        if row.lease_until > now:
            raise IdempotencyInFlight(
                "the first request with this Idempotency-Key is still being processed; retry later"
            )
        # The first request died without finishing: take over its claim (compare-and-set).
        taken = affected_rows(
            session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == row.id, IdempotencyKey.lease_until == row.lease_until)
                .values(lease_until=lease_until)
            )
        )
        if taken != 1:
            raise IdempotencyInFlight("another retry took over this Idempotency-Key; retry later")
        return Claim(row.id)


def complete(session: Session, claimed: Claim, response: StoredResponse) -> None:
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claimed.claim_id)
        .values(
            response_status=response.status,
            response_body=response.body,
            response_headers=response.headers,
            response_audit=response.audit,
        )
    )


def release(db: Database, claimed: Claim) -> None:
    with db.transaction() as session:
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == claimed.claim_id, IdempotencyKey.response_status.is_(None)
            )
        )


def purge_expired(db: Database, retention: timedelta) -> int:
    with db.transaction() as session:
        result = session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at < datetime.now(UTC) - retention)
        )
        return affected_rows(result)
