"""The shared seams every route and future feature builds on: the streaming context commits its
audit event before the first row, and expired idempotency keys are purged on a schedule."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.api.context import Answer, RequestContext
from app.auth.access import DEV_ACCESS
from app.db.models import AuditEvent, IdempotencyKey
from app.main import create_app
from app.services import idempotency
from app.services.audit import AuditInfo
from tests.conftest import make_settings


def _events(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def test_a_stream_commits_its_audit_event_before_the_first_row(client: TestClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    ctx = RequestContext(
        runtime.db,
        runtime.settings,
        DEV_ACCESS,
        "GET",
        "/v1/exports/x",
        "/v1/exports/x",
        None,
        "export-test",
    )
    seen_by_rows: list[int] = []

    def rows(session: Session) -> Iterator[bytes]:
        # Another connection sees the event: it was committed before streaming began.
        with runtime.db.read() as other:
            seen_by_rows.append(_events(other))
        yield b"a,b\n"
        yield b"1,2\n"

    response = ctx.stream(AuditInfo("export-test"), "text/csv", rows)
    assert seen_by_rows == []  # nothing streamed yet, the event is already there
    with runtime.db.read() as session:
        assert _events(session) == 1

    async def drain() -> bytes:
        chunks = [c async for c in response.body_iterator]
        return b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)

    assert anyio.run(drain) == b"a,b\n1,2\n"
    assert seen_by_rows == [1]


def _claim(db: object, key: str, age: timedelta) -> None:
    claimed = idempotency.claim(
        db,  # type: ignore[arg-type]
        idempotency.KeyScope("someone", "POST", "/v1/patients", key),
        idempotency.request_hash({"n": key}),
        idempotency.Policy(60, timedelta(hours=48)),
    )
    assert isinstance(claimed, idempotency.Claim)
    with db.transaction() as session:  # type: ignore[attr-defined]
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claimed.claim_id)
            .values(created_at=datetime.now(UTC) - age)
        )


def _keys(db: object) -> set[str]:
    with db.read() as session:  # type: ignore[attr-defined]
        return set(session.scalars(select(IdempotencyKey.key)))


def test_the_service_purges_idempotency_keys_past_their_retention_on_a_schedule(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path / "data", idempotency_purge_seconds=0.2, rate_limit_per_minute=0
    )
    with TestClient(create_app(settings)) as client:
        db = client.app.state.runtime.db  # type: ignore[attr-defined]
        _claim(db, "purge-old", timedelta(hours=49))
        _claim(db, "purge-recent", timedelta(hours=47))
        deadline = time.monotonic() + 10
        while "purge-old" in _keys(db) and time.monotonic() < deadline:
            time.sleep(0.1)
        keys = _keys(db)
        assert "purge-old" not in keys
        assert "purge-recent" in keys  # kept: younger than the 48-hour retention
        with db.transaction() as session:
            session.execute(
                IdempotencyKey.__table__.delete().where(  # type: ignore[attr-defined]
                    IdempotencyKey.key.like("purge-%")
                )
            )


def test_a_read_does_not_hold_the_write_lock_while_it_works(client: TestClient) -> None:
    """Issue 11: on SQLite every audited read used to run inside the write lock, so one slow
    read stalled every writer. Now the read's work runs in a read transaction and only its
    audit event is written afterwards: a write started during the read finishes first."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    ctx = RequestContext(
        runtime.db, runtime.settings, DEV_ACCESS, "GET", "/v1/x", "/v1/x", None, "read-x"
    )
    finished = threading.Event()

    def writer() -> None:
        with runtime.db.transaction() as session:
            session.execute(text("SELECT 1"))
        finished.set()

    def work(session: Session) -> Answer:
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(timeout=10)
        return Answer({"written_meanwhile": finished.is_set()}, AuditInfo("read-x"))

    response = ctx.read(work)
    assert response.body == b'{"written_meanwhile":true}'
    with runtime.db.read() as session:
        assert _events(session) == 1
