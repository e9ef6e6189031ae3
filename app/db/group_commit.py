"""Group commit: the write transactions that queue up while one runs share its database
transaction, each in a savepoint of its own, and commit (one fsync) together.

SQLite takes one writer at a time, and with `synchronous=FULL` every commit waits for an fsync
(about 1.3 ms here, against well under 0.1 ms for an insert). Writers of one process queue on a
lock; the lock holder, when it finishes and sees others waiting, hands them the open transaction
instead of committing it. The last of a group (nobody waiting, or the group full) commits for
everyone. Each request's work is still all-or-nothing on its own: it runs in a savepoint (the
first member in the transaction itself), and an exception rolls back that savepoint only (for
the first member: the transaction, which holds its work alone, and the group then ends), so one
failing request fails alone while the group's others commit. Nobody is answered before the
commit that holds their work: a member waits for the group's commit and fails (500, nothing
stored for anyone in the group) if that commit fails. So durability, audit-before-response and
atomicity are those of one transaction per request.

PostgreSQL: every audited write and read appends to the audit chain, whose lock serializes
appends until commit anyway (`app.db.chain_lock`), so concurrent transactions queued on it, each
paying its own lock, chain read and commit. Through one writer per process they share one lock
and one commit per group (`opened` takes the lock first, so that no group holds it while waiting
for a row lock of a transaction that waits for it).

A queued job may also bring a `Together` share: consecutive jobs of one kind (new assessments)
are then done by one member, one statement per table for all of them, and each job that member
could not do runs alone right after, as any other member (decision 0014).

Members come two ways. A sync route's thread runs its member itself (`transaction`). An async
route queues its work from the event loop (`run`): the jobs queued while the writer is busy are
run together by one helper thread, so a recorded assessment costs no thread hop of its own and
no thread of its own contending for the GIL (a sixteen-thread convoy cost a POST more CPU than
its SQL). Both kinds share the one lock, so they interleave group by group.

Another process (a second worker on the same file or database) waits on the database's lock as
before, in a request or helper thread (SQLite's `busy_timeout`, PostgreSQL's lock queue), never
on the event loop; the group size is bounded so that a steady stream of one process's writers
still lets it in between groups.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, NestedTransaction, RootTransaction
from sqlalchemy.orm import Session

T = TypeVar("T")
Item = TypeVar("Item")

MAX_GROUP = 8
"""Requests committed together at most (bounds the latency of a group's first member)."""

GROUP_FACTS = "db.group_facts"
"""`Session.info` key of a dict shared by a group's members: what its members that succeeded
(their work kept in the group's transaction) left under `MEMBER_FACTS`, later ones overwriting
earlier ones. A member that failed leaves nothing there: its work was rolled back."""
MEMBER_FACTS = "db.member_facts"
"""`Session.info` key of a dict a member fills for `GROUP_FACTS`, taken only if it succeeds."""


class GroupCommitFailed(RuntimeError):
    """The commit holding this request's work failed: nothing of it was stored."""


def _commit_failed(cause: BaseException) -> GroupCommitFailed:
    error = GroupCommitFailed(
        "the database could not commit this request's transaction; nothing was stored"
    )
    error.__cause__ = cause
    return error


@dataclass(frozen=True, slots=True)
class Together(Generic[Item, T]):
    """A queued job's share in work that jobs of one kind do together (`GroupWriter.run`).

    `run_many` does the items of consecutive queued jobs with the same `run_many` in one
    member (one statement per table for them all, instead of a member per job) and tells, for
    each item, whether it did it; a job whose item was done answers `answer`. A job whose item
    was not done runs alone, as its `work`, right after; so do all of them if `run_many` raises
    (its member is rolled back whole). So each job still succeeds or fails on its own."""

    run_many: Callable[[Session, list[Item]], list[bool]]
    item: Item
    answer: T


@dataclass(eq=False)
class _Job(Generic[T]):
    """A member queued from the event loop (`GroupWriter.run`)."""

    work: Callable[[Session], T]
    future: asyncio.Future[T]
    together: Together[Any, T] | None = None
    result: Any = None
    error: BaseException | None = None

    def settle(self) -> None:
        if self.future.done():  # cancelled while it ran: its work stands, nobody to tell
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)

    def committed_in(self, group: _Group) -> None:
        """After the group's end: a job whose work succeeded fails if the commit did."""
        if self.error is None and group.error is not None:
            self.error = _commit_failed(group.error)


@dataclass(eq=False)
class _Group:
    connection: Connection
    transaction: RootTransaction
    members: int = 0
    facts: dict[str, object] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    broken: bool = False  # its first member failed, or a savepoint could not be rolled back

    def finish(self) -> None:
        """Commit (or, with no member or a broken savepoint, roll back) and close."""
        try:
            if self.members and not self.broken:
                self.transaction.commit()
            else:
                self.transaction.rollback()
                if self.members:
                    self.error = RuntimeError("a savepoint of this group could not be rolled back")
        except BaseException as exc:
            self.error = exc
        finally:
            try:
                self.connection.close()
            finally:
                self.done.set()


@dataclass(eq=False)
class _Lane:
    """One event loop's queued jobs and the task that hands them to the writer."""

    jobs: deque[_Job[Any]] = field(default_factory=deque)
    drainer: asyncio.Task[None] | None = None


@dataclass(eq=False)
class GroupCommitStats:
    """Counts for tests and benchmarks: how many transactions ran, in how many commits."""

    transactions: int = 0
    commits: int = 0
    together: int = 0  # of the transactions: jobs done together with others (`Together`)


class GroupWriter:
    """`Database.transaction` (see the module docstring). `opened` runs first in every group's
    transaction; `session_info` is given to every member's session."""

    def __init__(
        self,
        engine: Engine,
        max_group: int = MAX_GROUP,
        *,
        opened: Callable[[Connection], None] | None = None,
        session_info: Mapping[str, object] | None = None,
    ) -> None:
        self._engine = engine  # on SQLite its connections BEGIN IMMEDIATE
        self._max_group = max_group
        self._opened = opened
        self._session_info = dict(session_info or {})
        self._lock = threading.Lock()  # held by the one thread working in the open group
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._group: _Group | None = None
        # Jobs queued by `run`, per event loop (one in a server; a test may run several at
        # once, each request of a TestClient outside `with` on a loop of its own).
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane] = (
            weakref.WeakKeyDictionary()
        )
        self.stats = GroupCommitStats()

    def _acquire(self) -> _Group:
        with self._count_lock:
            self._waiting += 1
        self._lock.acquire()
        with self._count_lock:
            self._waiting -= 1
        if self._group is None:
            try:
                connection = self._engine.connect()
                try:
                    group = _Group(connection, connection.begin())
                    if self._opened is not None:
                        self._opened(connection)
                    self._group = group
                except BaseException:
                    connection.close()
                    raise
            except BaseException:
                self._lock.release()
                raise
        return self._group

    def _release(self, group: _Group) -> bool:
        """Hand the open group to a waiting writer (True: wait for its commit), or commit it
        here. Called with the lock held; releases it."""
        with self._count_lock:
            waiting = self._waiting
        try:
            if waiting and group.members < self._max_group and not group.broken:
                return True
            self._group = None
            if group.members:
                self.stats.commits += 1
            group.finish()
            return False
        finally:
            self._lock.release()

    @contextmanager
    def _member(self, group: _Group, transactions: int = 1) -> Iterator[Session]:
        """One member's work in the open group (its lock held): its own savepoint and session.
        A member that fails leaves the group as it found it, or marks it broken. `transactions`:
        how many requests' transactions the member does (more than one: `Together`)."""
        # The group's first member needs no savepoint: if it fails, the whole transaction (its
        # work alone) is rolled back and the group is not handed on. Later members each get one,
        # which the member's session rolls back if it fails and never releases if it succeeds:
        # members run one after another, so rolling back to a member's savepoint undoes its own
        # work only, and the group's commit releases them all (one statement less per member).
        first = group.members == 0
        savepoint: NestedTransaction | None = None
        try:
            if not first:
                savepoint = group.connection.begin_nested()
            session = Session(
                bind=group.connection,
                join_transaction_mode="rollback_only",  # the member's savepoint, if it has one
                expire_on_commit=False,
                autoflush=False,
                info={**self._session_info, GROUP_FACTS: group.facts},
            )
        except BaseException:
            group.broken = True
            raise
        try:
            with session.begin():
                yield session
            group.facts.update(session.info.get(MEMBER_FACTS, {}))
        except BaseException:
            try:
                session.close()
                if savepoint is not None and savepoint.is_active:
                    savepoint.rollback()  # the member failed before its session used it
                if first or group.connection.invalidated:
                    group.broken = True  # rolled back whole
            except BaseException:
                group.broken = True  # a savepoint that could not be rolled back
            raise
        try:
            session.close()
            group.members += transactions
            self.stats.transactions += transactions
        except BaseException:
            group.broken = True
            raise

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A member run in the calling thread (which waits for the writer's lock)."""
        group = self._acquire()
        try:
            with self._member(group) as session:
                yield session
        except BaseException:
            self._release(group)  # always: a lock left held would stop every writer
            raise
        if self._release(group):
            group.done.wait()
        if group.error is not None:
            raise _commit_failed(group.error)

    async def run(
        self, work: Callable[[Session], T], together: Together[Any, T] | None = None
    ) -> T:
        """`work` as a member queued from the event loop, for async routes: no thread hop (and
        no thread) per request. The jobs queued meanwhile are run together, one after another,
        by one helper thread, in one group (or more, if a group's first fails), then committed;
        meanwhile the loop serves and queues the next ones. Waiting on another process (SQLite's
        `BEGIN IMMEDIATE`, PostgreSQL's chain lock) and the commit's fsync thus happen in that
        thread, never on the loop. With `together`, consecutive jobs of its kind share one
        member (`Together`). The answer (or the job's own exception) comes only after the
        commit that holds the job's work."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(work, loop.create_future(), together)
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
        lane.jobs.append(job)
        if lane.drainer is None or lane.drainer.done():
            lane.drainer = loop.create_task(self._drain(lane.jobs))
        return await job.future

    async def _drain(self, jobs: deque[_Job[Any]]) -> None:
        while jobs:
            batch = [jobs.popleft() for _ in range(min(self._max_group, len(jobs)))]
            try:
                await asyncio.to_thread(self._run_in_groups, batch)
            except BaseException:  # the process is stopping: nobody may wait for ever
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(
                            RuntimeError("the writer stopped; this write's outcome is unknown")
                        )
                raise
            for job in batch:
                job.settle()

    def _run_job(self, group: _Group, job: _Job[Any]) -> None:
        if job.future.cancelled():
            return  # its request is gone: nothing of it runs
        try:
            with self._member(group) as session:
                job.result = job.work(session)
        except Exception as exc:
            job.error = exc

    def _run_together(self, group: _Group, jobs: list[_Job[Any]]) -> list[_Job[Any]]:
        """Jobs of one `Together` kind in one member; returns those left to run alone (their
        `together` cleared): those whose item was not done, or all if the member failed (it is
        then rolled back whole, so nothing of theirs is kept twice)."""
        live = [job for job in jobs if not job.future.cancelled()]
        if not live:
            return []
        shares = [job.together for job in live if job.together is not None]
        assert len(shares) == len(live)  # `_take_together` takes only jobs with a share
        try:
            with self._member(group, len(live)) as session:
                done = shares[0].run_many(session, [share.item for share in shares])
                if len(done) != len(live):
                    raise RuntimeError("run_many must tell about every item")
        except Exception:
            done = [False] * len(live)
        else:
            skipped = done.count(False)  # counted as members above, but not done: not members
            group.members -= skipped
            self.stats.transactions -= skipped
        left: list[_Job[Any]] = []
        for job, share, ok in zip(live, shares, done, strict=True):
            if ok:
                job.result = share.answer
                self.stats.together += 1
            else:
                job.together = None
                left.append(job)
        return left

    def _take_together(self, group: _Group, pending: list[_Job[Any]]) -> list[_Job[Any]]:
        """The jobs at the head of `pending` that share the first one's `Together` kind, as many
        as the group has room for."""
        first = pending[0].together
        assert first is not None
        room = min(max(1, self._max_group - group.members), len(pending))
        count = 0
        while count < room:
            share = pending[count].together
            if share is None or share.run_many is not first.run_many:
                break
            count += 1
        taken = pending[:count]
        del pending[:count]
        return taken

    def _run_in_groups(self, batch: list[_Job[Any]]) -> None:
        """`batch` in a helper thread, in as few groups as its failures allow (a group's first
        member failing ends that group)."""
        pending = list(batch)
        while pending:
            try:
                group = self._acquire()
            except Exception as exc:
                for job in pending:
                    job.error = exc
                return
            ran: list[_Job[Any]] = []
            try:
                # A group handed over by a thread member may hold members already.
                while pending and not group.broken and group.members < self._max_group:
                    if pending[0].together is not None:
                        jobs = self._take_together(group, pending)
                        left = self._run_together(group, jobs)
                        ran.extend(job for job in jobs if job not in left)
                        pending[:0] = left  # next, alone (in this group, or a new one)
                        continue
                    ran.append(pending.pop(0))
                    self._run_job(group, ran[-1])
            finally:
                if self._release(group):
                    group.done.wait()
            for job in ran:
                job.committed_in(group)
