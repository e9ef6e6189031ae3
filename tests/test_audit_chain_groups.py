"""The audit chain through group commit (`app.db.group_commit`, `services.audit`): a member's
first event takes the chain's end from the member before it instead of reading it. Members
that fail after appending, events appended inside a savepoint that rolls back, and members
appending several times must still leave one linear chain that verifies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from app.auth.access import DEV_ACCESS
from app.db.database import Database
from app.db.models import AuditEvent
from app.services import audit
from app.services.audit import AuditInfo
from tests.dbs import BACKENDS, database_of

WRITERS = 30


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_of(request.param, tmp_path, migrated=True) as database:
        yield database


def _append(session: object, label: str) -> None:
    audit.record(session, DEV_ACCESS, "POST", "/test", AuditInfo(label), 201)  # type: ignore[arg-type]


def _writer(db: Database, i: int, started: threading.Barrier, kept: list[str]) -> None:
    """Five kinds of writer, in turn: appends once; appends and then fails; appends inside a
    savepoint that rolls back, then once more; appends three times; appends only inside a
    savepoint that rolls back."""
    started.wait()
    kind = i % 5
    try:
        with db.transaction() as session:
            if kind in (2, 4):
                try:
                    with session.begin_nested():
                        _append(session, f"{i}-undone")
                        raise ValueError("the savepoint rolls back")
                except ValueError:
                    pass
                if kind == 4:
                    return
            _append(session, f"{i}-a")
            if kind == 3:
                _append(session, f"{i}-b")
                _append(session, f"{i}-c")
            if kind == 1:
                raise RuntimeError("the member fails after its event")
    except RuntimeError:
        return
    kept.extend([f"{i}-a"] + ([f"{i}-b", f"{i}-c"] if kind == 3 else []))


def test_grouped_appends_leave_one_linear_chain_that_verifies(db: Database) -> None:
    reads: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "FROM audit_events ORDER BY audit_events.id DESC" in " ".join(statement.split()):
            reads.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    kept: list[str] = []
    started = threading.Barrier(WRITERS)
    threads = [
        threading.Thread(target=_writer, args=(db, i, started, kept)) for i in range(WRITERS)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    with db.read() as session:
        checked, broken = audit.verify_chain(session)
        stored = sorted(session.scalars(select(AuditEvent.action)))
        count = session.scalar(select(func.count()).select_from(AuditEvent))
    assert broken is None
    assert checked == count == len(kept)
    assert stored == sorted(kept)
    writer = db.writer
    assert writer is not None
    # Grouped members took the chain's end from the member before them.
    assert writer.stats.commits < writer.stats.transactions
    appends = len(kept) + sum(1 for i in range(WRITERS) if i % 5 in (1, 2, 4))
    assert len(reads) < appends
