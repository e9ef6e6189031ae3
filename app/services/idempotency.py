"""Idempotency keys, claimed through a unique index (not read-then-insert).

1. Claim, work and stored answer are ONE transaction: the claim inserts (owner, method, path,
   key) with the request hash and a lease, `ON CONFLICT DO NOTHING RETURNING`; the work runs;
   its answer is stored on the claim; all commit together. A crash or a failure (validation,
   404, 409...) leaves nothing, so failures are not remembered and no claim is ever left
   without its answer by a request of this service.
2. Nothing inserted means someone used the key before (the unique index decides; on PostgreSQL
   a concurrent claimer's insert waits for the first transaction's end, then finds its row):
   replay their stored response (same hash), refuse a different body (422), or answer 409
   while a claim without an answer holds a live lease.
3. A claim without an answer (one committed on its own by `claim`, as a takeover or an older
   release did) is taken over once its lease expires, and every answer is stored only while its
   claim still holds the key (the fencing token), so of a request and its retry one answer
   stands.

`run_once` is the whole protocol in one function, so that a v1 POST, a batch item and a FHIR
create run the very same code.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import TextualSelect, bindparam, delete, insert, select, text, update
from sqlalchemy.orm import Session

from app.db.database import Database
from app.db.models import IdempotencyKey, table_of
from app.errors import IdempotencyInFlight, IdempotencyKeyReused, InvalidParameter
from app.services.versioning import affected_rows

MAX_KEY_LENGTH = 255
_INSERT_KEY = insert(table_of(IdempotencyKey))


def _claim_statement() -> TextualSelect:
    """A claim is an insert that does nothing when the key is taken (the unique index on owner
    and key): no savepoint, no aborted statement, and a key in flight elsewhere is waited for
    by the database, then found. Plain SQL (the same on SQLite and PostgreSQL), with the
    columns' types for its parameters: SQLAlchemy's dialect inserts with ON CONFLICT are never
    cached, so that form was compiled anew on every keyed request (a sixth of its CPU)."""
    table = table_of(IdempotencyKey)
    names = ("owner", "method", "path", "key", "request_hash", "created_at", "lease_until", "token")
    return (
        text(
            'INSERT INTO idempotency_keys ("owner", "method", "path", "key", "request_hash", '
            '"created_at", "lease_until", "token") VALUES (:owner, :method, :path, :key, '
            ":request_hash, :created_at, :lease_until, :token) "
            "ON CONFLICT DO NOTHING RETURNING id"
        )
        .bindparams(*(bindparam(name, type_=table.c[name].type) for name in names))
        .columns(table.c.id)
    )


_CLAIM = _claim_statement()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: str
    headers: dict[str, str]
    audit: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A held key. `token` is its fencing token: whoever takes the key over gets a new one."""

    claim_id: int
    token: str


@dataclass(frozen=True, slots=True)
class KeyScope:
    """A key belongs to its owner (the API key's name) and names one request: its method and
    its canonical path (route and resource, ids in canonical form). Reusing it for another is
    422, as Stripe does."""

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
    session: Session,
    scope: KeyScope,
    digest: str,
    work: Callable[[Session], StoredResponse],
    policy: Policy,
    on_replay: Callable[[Session, StoredResponse], None],
) -> tuple[StoredResponse, bool]:
    """Run `work` at most once per key, in the caller's write transaction: the claim, the work
    and its stored copy commit together (one commit per request instead of a claim's, a work's
    and a failure's release), and a failure rolls the claim back with the work. A replay
    returns the first answer (and `True`) with `on_replay` (its audit) in the transaction."""
    outcome = claim_in(session, scope, digest, policy)
    if isinstance(outcome, StoredResponse):
        on_replay(session, outcome)
        return outcome, True
    response = work(session)
    complete(session, outcome, response)
    return response, False


def claim(db: Database, key_scope: KeyScope, digest: str, policy: Policy) -> Claim | StoredResponse:
    """A claim committed on its own, without its work: what a request elsewhere holds while it
    works (earlier releases claimed this way; the tests stand in for such requests with it)."""
    with db.transaction() as session:
        return claim_in(session, key_scope, digest, policy)


def _fresh(key_scope: KeyScope, digest: str, policy: Policy, now: datetime) -> dict[str, Any]:
    """A new claim's columns (but its owner and key)."""
    return {
        "method": key_scope.method,
        "path": key_scope.path,
        "request_hash": digest,
        "created_at": now,
        "lease_until": now + timedelta(seconds=policy.lease_seconds),
        "token": secrets.token_hex(16),
    }


def used_keys(session: Session, owner: str, keys: list[str]) -> set[str]:
    """Which of these keys of one owner are in the table (claimed, answered or expired)."""
    if not keys:
        return set()
    return set(
        session.scalars(
            select(IdempotencyKey.key).where(
                IdempotencyKey.owner == owner, IdempotencyKey.key.in_(keys)
            )
        )
    )


def unused(session: Session, rows: list[dict[str, Any] | None]) -> list[bool]:
    """For each of several requests' key rows (`answered`; None: no key), whether it may be
    inserted: its key is not in the table, nor an earlier row's of the same owner and key. One
    lookup per owner."""
    by_owner: dict[str, list[str]] = {}
    for row in rows:
        if row is not None:
            by_owner.setdefault(row["owner"], []).append(row["key"])
    taken = {
        (owner, key) for owner, keys in by_owner.items() for key in used_keys(session, owner, keys)
    }
    free = []
    for row in rows:
        if row is None:
            free.append(True)
            continue
        name = (row["owner"], row["key"])
        free.append(name not in taken)
        taken.add(name)
    return free


def answered(
    key_scope: KeyScope, digest: str, policy: Policy, response: StoredResponse
) -> dict[str, Any]:
    """A claim and its stored answer as one row, for a key `used_keys` found unused: a batch
    inserts its new keys already answered, in the transaction of their work (a key taken
    meanwhile fails the insert on the unique index, as a claim would)."""
    return {
        "owner": key_scope.owner,
        "key": key_scope.key,
        **_fresh(key_scope, digest, policy, datetime.now(UTC)),
        "response_status": response.status,
        "response_body": response.body,
        "response_headers": response.headers,
        "response_audit": response.audit,
    }


def insert_answered(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(_INSERT_KEY, rows)


def claim_in(
    session: Session, key_scope: KeyScope, digest: str, policy: Policy
) -> Claim | StoredResponse:
    """`claim` in the caller's transaction (a batch claims its items' keys in the transaction
    that writes them: the claim, the work and the stored answer then commit together)."""
    now = datetime.now(UTC)
    fresh = _fresh(key_scope, digest, policy, now)
    lease_until, token = fresh["lease_until"], fresh["token"]
    connection = session.connection()
    new_id = connection.execute(
        _CLAIM, {"owner": key_scope.owner, "key": key_scope.key, **fresh}
    ).scalar()
    if new_id is not None:
        return Claim(new_id, token)
    row = session.execute(
        select(IdempotencyKey).where(
            IdempotencyKey.owner == key_scope.owner, IdempotencyKey.key == key_scope.key
        )
    ).scalar_one()

    def take_over(*conditions: Any, **changes: Any) -> Claim:
        """Compare-and-set on the token the key had when read: of racing retries one wins."""
        taken = affected_rows(
            session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == row.id, IdempotencyKey.token == row.token, *conditions)
                .values(lease_until=lease_until, token=token, **changes)
            )
        )
        if taken != 1:
            raise IdempotencyInFlight(
                "another request with this Idempotency-Key is being processed; retry later"
            )
        return Claim(row.id, token)

    if row.created_at < now - policy.retention:
        # Expired: forget the old use and claim afresh.
        return take_over(
            **fresh,
            response_status=None,
            response_body=None,
            response_headers=None,
            response_audit=None,
        )
    if (row.method, row.path) != (key_scope.method, key_scope.path):
        raise IdempotencyKeyReused(
            f"this Idempotency-Key was used for another request ({row.method} {row.path}); "
            "use a new key"
        )
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
    # The first request outlived its lease (it died, or is stuck): take its claim over, but
    # never once it has stored its answer.
    return take_over(IdempotencyKey.response_status.is_(None))


_KEYS = table_of(IdempotencyKey)
_COMPLETE = (
    update(_KEYS)
    .where(
        _KEYS.c.id == bindparam("claim_id"),
        _KEYS.c.token == bindparam("claim_token"),
        _KEYS.c.response_status.is_(None),
    )
    .values(
        response_status=bindparam("stored_status", type_=_KEYS.c.response_status.type),
        response_body=bindparam("stored_body", type_=_KEYS.c.response_body.type),
        response_headers=bindparam("stored_headers", type_=_KEYS.c.response_headers.type),
        response_audit=bindparam("stored_audit", type_=_KEYS.c.response_audit.type),
    )
)


def complete(session: Session, claimed: Claim, response: StoredResponse) -> None:
    """Store the answer, in the work's own transaction, only while this claim still holds the
    key (its fencing token): a request that outlived its lease and was taken over by a retry
    fails here, and its work rolls back with it, so the retry's answer stands."""
    stored = affected_rows(
        session.connection().execute(
            _COMPLETE,
            {
                "claim_id": claimed.claim_id,
                "claim_token": claimed.token,
                "stored_status": response.status,
                "stored_body": response.body,
                "stored_headers": response.headers,
                "stored_audit": response.audit,
            },
        )
    )
    if stored != 1:
        raise IdempotencyInFlight(
            "this request outlived its Idempotency-Key lease and a retry took the key over: "
            "nothing was stored; retry to get the retry's answer"
        )


def release(db: Database, claimed: Claim) -> None:
    """Forget a claim whose request failed (failures are not remembered), unless another
    request holds the key by now."""
    with db.transaction() as session:
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == claimed.claim_id,
                IdempotencyKey.token == claimed.token,
                IdempotencyKey.response_status.is_(None),
            )
        )


def purge_expired(db: Database, retention: timedelta) -> int:
    with db.transaction() as session:
        result = session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at < datetime.now(UTC) - retention)
        )
        return affected_rows(result)
