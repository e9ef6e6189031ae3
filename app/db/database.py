"""Engine and transactions.

Routes open one explicit transaction per request (`Database.transaction`) and it commits before
the response is built, so a 2xx is never sent for a write whose commit failed (the FastAPI
0.118+ trap of committing after `yield` in a dependency).

SQLite: WAL with synchronous=FULL for durability, foreign keys on, `BEGIN IMMEDIATE` for write
transactions and one writer at a time in-process (relying on busy_timeout alone gave p99 ~1 s).
On both databases a process's queued write transactions commit as a group
(`app.db.group_commit`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic_core import to_json
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.db.chain_lock import LOCKED, lock_chain
from app.db.group_commit import MAX_GROUP, GroupWriter, Together

T = TypeVar("T")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, emit BEGIN (so it can be IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _private_file(path: Path) -> None:
    """The embedded database holds patient data: its folder is created 0700 and the file 0600
    (SQLite gives its -wal and -shm files the database file's mode)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _plain_savepoints(engine: Engine) -> None:
    """Savepoints as plain SQL. SQLAlchemy names each savepoint of a connection anew
    (`sa_savepoint_1`, `_2`, ...) and compiles the statement for it on every use, uncached: a
    group-commit member's savepoint cost more CPU than its inserts (a tenth of a recorded
    assessment's). The names are SQLAlchemy's own, quoted as identifiers."""
    quote = engine.dialect.identifier_preparer.quote

    def statement(verb: str) -> Any:
        def run(connection: Any, name: str) -> None:
            connection.exec_driver_sql(f"{verb} {quote(name)}")

        return run

    dialect = engine.dialect
    setattr(dialect, "do_savepoint", statement("SAVEPOINT"))  # noqa: B010
    setattr(dialect, "do_rollback_to_savepoint", statement("ROLLBACK TO SAVEPOINT"))  # noqa: B010
    setattr(dialect, "do_release_savepoint", statement("RELEASE SAVEPOINT"))  # noqa: B010


def _json_text(value: Any) -> str:
    """JSON columns' encoder: pydantic-core's, about four times faster than `json.dumps` on an
    assessment's content and scores (encoded for the row and its history entry on every
    write). Compact, UTF-8: the same JSON values, read back by the driver as before."""
    return to_json(value).decode()


POOL_SIZE = 40  # = AnyIO's default thread-pool size, which runs the sync handlers


def create_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_file(Path(parsed.database))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=POOL_SIZE,
            max_overflow=0,
            hide_parameters=True,
            json_serializer=_json_text,
        )
        _configure_sqlite(engine)
        _plain_savepoints(engine)
        return engine
    # hide_parameters: bound values (identifiers, notes) never reach error messages or logs.
    # The pool holds as many connections as requests can run at once (the thread pool's size):
    # an overflow connection is closed after use, and opening one costs ~7 ms.
    # Sessions in UTC: timestamps then arrive with the driver's `timezone.utc`, which
    # `UtcDateTime` passes through instead of converting each from the server's zone (zoneinfo
    # conversion was a quarter of reading a 1,000-assessment course). Nothing in SQL depends on
    # the session's zone: every timestamp column is timestamptz.
    engine = create_engine(
        url,
        connect_args={"options": "-c TimeZone=UTC"},
        pool_size=POOL_SIZE,
        max_overflow=0,
        pool_timeout=30,
        pool_pre_ping=True,
        hide_parameters=True,
        json_serializer=_json_text,
    )
    _plain_savepoints(engine)
    return engine


class Database:
    def __init__(self, url: str, group_commit_max: int = MAX_GROUP) -> None:
        """`group_commit_max`: write transactions committed together at most (one fsync); on
        PostgreSQL 0 means no group writer (each transaction commits on its own, still taking
        the audit chain's lock first)."""
        self.engine = create_db_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        writer_engine = (
            self.engine.execution_options(sqlite_begin="IMMEDIATE")
            if self.is_sqlite
            else self.engine
        )
        self._write_sessions = sessionmaker(writer_engine, expire_on_commit=False, autoflush=False)
        self.writer: GroupWriter | None = None
        if self.is_sqlite:
            self.writer = GroupWriter(writer_engine, max(1, group_commit_max))
        elif group_commit_max > 0:
            self.writer = GroupWriter(
                self.engine, group_commit_max, opened=lock_chain, session_info={LOCKED: True}
            )
        self._bulk_lane = threading.Lock() if self.is_sqlite else None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: committed (durably) before it returns, rolled back on any
        exception. Transactions that queue for the process's writer commit as a group
        (`app.db.group_commit`), each still all-or-nothing on its own."""
        if self.writer is not None:
            with self.writer.transaction() as session:
                yield session
            return
        with self._write_sessions() as session, session.begin():
            # PostgreSQL without the writer: the chain lock first here too, so that no write
            # transaction holds a row lock (a patient's revision, bumped by every record
            # write) while it waits for the lock held by one that waits for that row.
            lock_chain(session.connection())
            session.info[LOCKED] = True
            yield session

    async def run_write(
        self, work: Callable[[Session], T], together: Together[Any, T] | None = None
    ) -> T:
        """`work` in a write transaction, for async routes: queued from the event loop for the
        writer (`GroupWriter.run`, where `together` lets it share a member with jobs of its
        kind), or (PostgreSQL with the writer off) run alone in a worker thread. Returns after
        the commit, with what `work` returned (or `together.answer`)."""
        if self.writer is not None:
            return await self.writer.run(work, together)

        def alone() -> T:
            with self.transaction() as session:
                return work(session)

        return await asyncio.to_thread(alone)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (never takes SQLite's write lock)."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def bulk_read(self) -> Iterator[None]:
        """Around a read of many rows and the computation on them (a patient's outcomes): on
        SQLite one at a time per process. pysqlite lets go of the GIL around every row it
        steps, and with other threads computing, each row then waits for the GIL to come back
        (a convoy): 16 concurrent cold outcomes reads cost 87 ms of CPU each instead of ~28.
        Queued on this lock instead, each runs nearly alone. PostgreSQL's driver receives the
        rows whole, so there it is a no-op."""
        if self._bulk_lane is None:
            yield
            return
        with self._bulk_lane:
            yield

    def dispose(self) -> None:
        self.engine.dispose()
