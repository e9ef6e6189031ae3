"""Group commit (`app.db.group_commit`), on both databases: writers that queue for the
process's writer share its transaction, each in a savepoint, and commit together. Each must
still be all-or-nothing on its own, answered only after the commit that holds its work, and
fail (storing nothing) when that commit fails."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.db.chain_lock import lock_chain
from app.db.database import Database
from app.db.group_commit import GroupCommitFailed, GroupWriter, Together
from tests.dbs import BACKENDS, database_of

WRITERS = 24


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_of(request.param, tmp_path, migrated=False) as database:
        yield database


def _stored(db: Database) -> set[int]:
    with db.read() as session:
        return set(session.scalars(text("SELECT n FROM t")))


def _together(db: Database, work: list[object], hold: float = 0.02) -> list[object]:
    """Run the writers at once; the first holds the writer long enough for the others to
    queue behind it. Returns what each raised (or None)."""
    writer = db.writer
    assert writer is not None
    outcomes: list[object] = [None] * len(work)
    started = threading.Barrier(len(work))

    def run(i: int) -> None:
        started.wait()
        try:
            with db.transaction() as session:
                if work[i] == "fail-early":
                    raise ValueError(f"writer {i} fails before its first statement")
                session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": i})
                if i == 0:
                    threading.Event().wait(hold)
                if work[i] == "fail":
                    raise ValueError(f"writer {i} fails")
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def _insert(n: int, fail: bool = False) -> Callable[[Session], int]:
    def work(session: Session) -> int:
        session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
        if fail:
            raise ValueError(f"job {n} fails")
        return n

    return work


async def _jobs(db: Database, plan: list[str]) -> list[object]:
    """Submit `plan`'s jobs from the event loop at once; what each returned or raised."""
    return await asyncio.gather(
        *(db.run_write(_insert(i, fail=p == "fail")) for i, p in enumerate(plan)),
        return_exceptions=True,
    )


def test_queued_writers_commit_in_fewer_commits_and_all_are_stored(db: Database) -> None:
    writer = db.writer
    assert isinstance(writer, GroupWriter)
    before = (writer.stats.transactions, writer.stats.commits)
    outcomes = _together(db, ["ok"] * WRITERS)
    assert outcomes == [None] * WRITERS
    assert _stored(db) == set(range(WRITERS))
    transactions = writer.stats.transactions - before[0]
    commits = writer.stats.commits - before[1]
    assert transactions == WRITERS
    assert commits < WRITERS  # grouped: fewer fsyncs than transactions


def _fail_alone(db: Database, plan: list[str]) -> int:
    """Run `plan`; exactly its failing writers fail (ValueError), and exactly the others'
    rows are stored. Returns how many failed."""
    outcomes = _together(db, list(plan))
    failed = {i for i, o in enumerate(outcomes) if o is not None}
    assert failed == {i for i, p in enumerate(plan) if p != "ok"}
    assert all(isinstance(outcomes[i], ValueError) for i in failed)
    assert _stored(db) == set(range(len(plan))) - failed
    return len(failed)


def test_a_failing_writer_fails_alone_and_leaves_nothing(db: Database) -> None:
    _fail_alone(db, ["fail" if i % 5 == 3 else "ok" for i in range(WRITERS)])


def test_a_writer_failing_before_its_first_statement_fails_alone(db: Database) -> None:
    """Its savepoint was taken for it but never used: it is rolled back all the same, and the
    group's other members commit."""
    writer = db.writer
    assert writer is not None
    before = writer.stats.commits
    failed = _fail_alone(db, ["fail-early" if i % 4 == 2 else "ok" for i in range(WRITERS)])
    assert writer.stats.commits - before < WRITERS - failed  # they were grouped


@pytest.mark.parametrize("via", ["threads", "event-loop"])
def test_a_failed_group_commit_fails_every_member_and_stores_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    """Members run by their own threads (`transaction`) or queued from the event loop
    (`run`) alike."""
    from app.db import group_commit

    def failing_commit(self: group_commit._Group) -> None:
        self.error = OSError("disk I/O error")
        self.transaction.rollback()
        self.connection.close()
        self.done.set()

    monkeypatch.setattr(group_commit._Group, "finish", failing_commit)
    plan = ["ok"] * 8
    outcomes = _together(db, plan) if via == "threads" else asyncio.run(_jobs(db, plan))
    assert all(isinstance(o, GroupCommitFailed) for o in outcomes), outcomes
    monkeypatch.undo()
    assert _stored(db) == set()
    with db.transaction() as session:  # the writer is usable again afterwards
        session.execute(text("INSERT INTO t (n) VALUES (99)"))
    assert asyncio.run(_jobs(db, ["ok"])) == [0]  # from the event loop too
    assert _stored(db) == {99, 0}


def test_nobody_is_answered_before_the_commit_holding_their_work(db: Database) -> None:
    """Every writer, on leaving `transaction()`, finds its row visible to a new connection."""
    seen_missing: list[int] = []

    def check(i: int) -> None:
        with db.transaction() as session:
            session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": i})
        if i not in _stored(db):
            seen_missing.append(i)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen_missing == []
    assert _stored(db) == set(range(WRITERS))


def test_a_savepoint_inside_a_grouped_transaction_still_works(db: Database) -> None:
    with db.transaction() as session:
        session.execute(text("INSERT INTO t (n) VALUES (1)"))
        try:
            with session.begin_nested():
                session.execute(text("INSERT INTO t (n) VALUES (2)"))
                raise ValueError
        except ValueError:
            pass
    assert _stored(db) == {1}


def test_a_failing_first_member_fails_alone_and_the_queued_ones_commit(db: Database) -> None:
    """The group's first member runs without a savepoint: its failure rolls the transaction
    back whole, so the group must end there, and the writers queued behind it start afresh."""
    writer = db.writer
    assert writer is not None
    holding = threading.Event()
    queued = 5
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with db.transaction() as session:
                session.execute(text("INSERT INTO t (n) VALUES (100)"))
                holding.set()
                for _ in range(500):  # until the others wait behind this one
                    if writer._waiting >= queued:
                        break
                    threading.Event().wait(0.01)
                raise ValueError("the first member fails")
        except ValueError as exc:
            errors.append(exc)

    def later(n: int) -> None:
        holding.wait(10)
        with db.transaction() as session:
            session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})

    threads = [threading.Thread(target=first)] + [
        threading.Thread(target=later, args=(n,)) for n in range(queued)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(errors) == 1
    assert _stored(db) == set(range(queued))  # theirs, and nothing of the first


def test_bulk_reads_on_sqlite_run_one_at_a_time(db: Database) -> None:
    """`Database.bulk_read` (uncached outcomes, charts): on SQLite the second waits for the
    first, so a computation never convoys with another on the GIL."""
    if not db.is_sqlite:
        pytest.skip("PostgreSQL's driver receives rows whole: no lane")
    inside = 0
    most = 0
    count_lock = threading.Lock()

    def read() -> None:
        nonlocal inside, most
        with db.bulk_read(), db.read() as session:
            with count_lock:
                inside += 1
                most = max(most, inside)
            session.execute(text("SELECT count(*) FROM t"))
            threading.Event().wait(0.05)
            with count_lock:
                inside -= 1

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert most == 1


@pytest.mark.parametrize("other_group_max", [8, 0], ids=["writer", "no-writer"])
def test_on_postgresql_a_group_takes_the_audit_chain_lock_before_any_work(
    db: Database, other_group_max: int
) -> None:
    """Two workers on one PostgreSQL database: a group holds the audit chain's lock from its
    first statement, so the other worker's transaction starts its work only after the first
    commits. No group can then hold the lock while waiting for a row lock of a transaction that
    waits for the lock (a deadlock between workers: every record write also updates its
    patient's row, the revision). Without the writer (`POSTGRES_GROUP_COMMIT_MAX=0`) each
    transaction takes the lock first too."""
    if db.is_sqlite:
        pytest.skip("SQLite's single writer orders the chain")
    other = Database(db.engine.url.render_as_string(hide_password=False), other_group_max)
    inside = threading.Event()
    timeline: list[str] = []

    def first() -> None:
        with db.transaction() as session:
            session.execute(text("INSERT INTO t (n) VALUES (1)"))
            inside.set()
            threading.Event().wait(0.3)
            timeline.append("first commits")

    def second() -> None:
        inside.wait(10)
        with other.transaction() as session:
            timeline.append("second works")
            session.execute(text("INSERT INTO t (n) VALUES (2)"))

    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        other.dispose()
    assert timeline == ["first commits", "second works"]
    assert _stored(db) == {1, 2}


# --------------------------------------------------------------------------- from the event loop


def test_jobs_from_the_event_loop_commit_together_and_each_gets_its_own_answer(
    db: Database,
) -> None:
    writer = db.writer
    assert writer is not None
    before = (writer.stats.transactions, writer.stats.commits)
    answers = asyncio.run(_jobs(db, ["ok"] * WRITERS))
    assert answers == list(range(WRITERS))
    assert _stored(db) == set(range(WRITERS))
    assert writer.stats.transactions - before[0] == WRITERS
    assert writer.stats.commits - before[1] < WRITERS  # grouped


@pytest.mark.parametrize("failing", [[0], [3, 4, 11], [0, 1, 8, 23]])
def test_a_failing_job_from_the_event_loop_fails_alone(db: Database, failing: list[int]) -> None:
    """Including a group's first job, whose failure rolls its group back whole: the jobs
    queued behind it must then start a group afresh, not be lost with it."""
    plan = ["fail" if i in failing else "ok" for i in range(WRITERS)]
    answers = asyncio.run(_jobs(db, plan))
    for i, answer in enumerate(answers):
        if i in failing:
            assert isinstance(answer, ValueError)
            assert str(answer) == f"job {i} fails"
        else:
            assert answer == i
    assert _stored(db) == set(range(WRITERS)) - set(failing)


def test_a_job_is_answered_only_after_its_commit_and_threads_share_the_writer(
    db: Database,
) -> None:
    """Jobs from the event loop and members in threads (the sync routes) queue for the same
    writer; each job's row is visible to a new connection when its answer arrives."""
    missing: list[int] = []

    async def job(n: int) -> None:
        await db.run_write(_insert(n))
        if n not in _stored(db):
            missing.append(n)

    def thread_member(n: int) -> None:
        with db.transaction() as session:
            session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})

    async def main() -> None:
        threads = [asyncio.to_thread(thread_member, 1000 + n) for n in range(WRITERS // 2)]
        await asyncio.gather(*threads, *(job(n) for n in range(WRITERS)))

    asyncio.run(main())
    assert missing == []
    assert _stored(db) == set(range(WRITERS)) | {1000 + n for n in range(WRITERS // 2)}


def test_a_job_waiting_for_another_process_lock_does_not_stall_the_event_loop(
    db: Database,
) -> None:
    """Another process (here: another engine) holds the database's write lock (SQLite) or
    the audit chain's lock (PostgreSQL) for a while: the job waits for it in a helper
    thread, and the event loop keeps serving meanwhile."""
    other = create_engine(db.engine.url)
    hold = 0.5
    try:
        with other.connect() as connection:
            if db.is_sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's one write lock
            else:
                connection.begin()
                lock_chain(connection)

            async def main() -> tuple[float, float]:
                gaps: list[float] = []
                done = asyncio.Event()

                async def tick() -> None:
                    last = time.monotonic()
                    while not done.is_set():
                        await asyncio.sleep(0.01)
                        now = time.monotonic()
                        gaps.append(now - last)
                        last = now

                ticker = asyncio.create_task(tick())
                await asyncio.sleep(0.05)
                releaser = threading.Timer(hold, connection.rollback)  # not on the loop
                releaser.start()
                started = time.monotonic()
                await db.run_write(_insert(1))
                waited = time.monotonic() - started
                done.set()
                await ticker
                releaser.join()
                return waited, max(gaps)

            waited, longest_gap = asyncio.run(main())
    finally:
        other.dispose()
    assert waited >= hold * 0.9  # it did wait for the lock
    assert longest_gap < hold / 2  # and the loop kept turning meanwhile
    assert _stored(db) == {1}


# --------------------------------------------------------------------------- jobs done together


def _insert_many(session: Session, items: list[tuple[int, str]]) -> list[bool]:
    """A `Together.run_many`: inserts every item but "skip" ones in one statement; an item
    planned "explode" makes it raise after its insert (the member is then rolled back)."""
    done = [plan != "skip" for _, plan in items]
    rows = [{"n": n} for (n, _), ok in zip(items, done, strict=True) if ok]
    if rows:
        session.execute(text("INSERT INTO t (n) VALUES (:n)"), rows)
    if any(plan == "explode" for _, plan in items):
        raise RuntimeError("a statement of the shared member failed")
    return done


async def _together_jobs(db: Database, plan: list[str]) -> list[object]:
    """`plan`'s jobs submitted at once with a `Together` share; each job's own work inserts
    its row alone (1000 + n, so a test sees which way it was stored), failing when planned
    "fail" or "explode" (as a bad request would, run alone)."""

    def alone(n: int, p: str) -> Callable[[Session], object]:
        return _insert(1000 + n, fail=p in ("fail", "explode"))

    return await asyncio.gather(
        *(
            db.run_write(alone(i, p), Together(_insert_many, (i, p), f"together {i}"))
            for i, p in enumerate(plan)
        ),
        return_exceptions=True,
    )


def test_jobs_of_one_kind_are_done_together_in_fewer_commits(db: Database) -> None:
    writer = db.writer
    assert writer is not None
    before = (writer.stats.transactions, writer.stats.commits, writer.stats.together)
    answers = asyncio.run(_together_jobs(db, ["ok"] * WRITERS))
    assert answers == [f"together {i}" for i in range(WRITERS)]
    assert _stored(db) == set(range(WRITERS))
    assert writer.stats.transactions - before[0] == WRITERS
    assert writer.stats.together - before[2] == WRITERS
    assert writer.stats.commits - before[1] < WRITERS


def test_an_item_not_done_together_runs_alone_and_fails_alone(db: Database) -> None:
    """ "skip" items are not done by `run_many`: their jobs run their own work, which fails for
    the one that would fail anyway and succeeds for the others."""
    plan = ["ok"] * WRITERS
    plan[2] = plan[9] = "skip"
    plan[0] = "skip"
    answers = asyncio.run(_together_jobs(db, plan))
    for i, p in enumerate(plan):
        assert answers[i] == (i + 1000 if p == "skip" else f"together {i}")
    assert _stored(db) == {i + 1000 if p == "skip" else i for i, p in enumerate(plan)}


@pytest.mark.parametrize("exploding", [0, 5, 17])
def test_a_shared_member_that_fails_is_rolled_back_and_its_jobs_run_alone(
    db: Database, exploding: int
) -> None:
    """The item that makes the shared member fail fails alone (its own work fails too); the
    jobs that shared the member with it are each stored once, by their own work, and every
    other job as it was. Includes a group's first member (the group is then rolled back and
    its jobs start a new one)."""
    plan = ["ok"] * WRITERS
    plan[exploding] = "explode"
    answers = asyncio.run(_together_jobs(db, plan))
    assert isinstance(answers[exploding], ValueError)
    stored = _stored(db)
    assert exploding not in stored
    assert exploding + 1000 not in stored
    for i, answer in enumerate(answers):
        if i != exploding:
            assert answer in (f"together {i}", i + 1000)
            assert (i in stored) == (answer == f"together {i}")
            assert (i + 1000 in stored) == (answer == i + 1000)
    assert len(stored) == WRITERS - 1
    alone = [i for i, a in enumerate(answers) if a == i + 1000]
    assert exploding not in alone
    assert alone


def test_jobs_done_together_are_answered_only_after_their_commit(db: Database) -> None:
    missing: list[int] = []

    async def job(n: int) -> None:
        await db.run_write(_insert(1000 + n), Together(_insert_many, (n, "ok"), n))
        if n not in _stored(db):
            missing.append(n)

    async def main() -> None:
        await asyncio.gather(*(job(n) for n in range(WRITERS)))

    asyncio.run(main())
    assert missing == []
    assert _stored(db) == set(range(WRITERS))


def test_jobs_from_two_event_loops_at_once_are_all_answered(db: Database) -> None:
    """A server has one loop, a test client outside `with` a loop per request: jobs queued
    from several loops at the same time each reach the writer and get their answer."""
    answers: dict[int, list[object]] = {}

    async def jobs(offset: int) -> list[object]:
        return await asyncio.wait_for(
            asyncio.gather(*(db.run_write(_insert(offset + i)) for i in range(WRITERS))), 20
        )

    def in_its_own_loop(offset: int) -> None:
        answers[offset] = asyncio.run(jobs(offset))

    threads = [threading.Thread(target=in_its_own_loop, args=(o,)) for o in (0, 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {o: [o + i for i in range(WRITERS)] for o in (0, 1000)}
    assert _stored(db) == {o + i for o in (0, 1000) for i in range(WRITERS)}
