"""Crash drill: kill -9 the server (or the PostgreSQL server under it) mid-load, restart it,
and prove no acknowledged write is lost, none is stored twice and none is half-written; count
the kills that landed between a commit and its response.

Three drills (`--db`, all by default):

* `postgresql`, `sqlite`: the SERVICE's process group is killed (uvicorn), on a fresh migrated
  database (PostgreSQL: a new database on the shared test server, which is never signalled);
* `postgresql-server`: the POSTGRESQL SERVER is killed: a throwaway cluster of its own
  (`bench.pgcluster`: initdb into a temporary directory, its own port and socket directory,
  fsync=on and synchronous_commit=on), whose postmaster is kill -9ed and at once every process
  it started, then restarted (crash recovery), while the service keeps running: its pool
  (pool_pre_ping) must reconnect. Skipped, with a message, where there are no PostgreSQL
  server binaries (or as root without a `postgres` OS user).

For each:

1. start the real service (uvicorn subprocess, `tests.live.LiveServer`) with
   IDEMPOTENCY_LEASE_SECONDS=2 on a fresh migrated database and create one patient;
2. `--clients` threads post assessments, each with a unique Idempotency-Key (also stored in the
   assessment's `notes`, so every stored row names the key that wrote it). A client that gets no
   answer (connection reset by the kill, refused while restarting, 5xx) or 409 "in flight"
   retries the SAME key and body, as an integrator would, until it gets an answer (bounded);
   every attempt is logged with its start and end time;
3. meanwhile the target is killed with SIGKILL `--kills` times, at evenly spaced points of the
   load, and restarted each time on the same database and port. `--timing targeted` (default)
   aims each kill at a commit whose answer is not out yet: the service is frozen (SIGSTOP), the
   database asked whether a request still in flight has already committed, and the frozen
   service is killed if so (else thawed and tried again, for at most 3 s, then killed anyway);
   PostgreSQL is killed by a proxy between the service and the cluster the moment the reply to
   such a COMMIT arrives, before the service sees it. `--timing random` kills anywhere;
4. afterwards, with the server up:
   * every acknowledged (2xx) assessment is readable (GET /v1/assessments/{id} is 200) with
     exactly the acknowledged content (lost / changed);
   * every stored assessment of the patient has its version-1 history row with the same content
     and scores, and its create audit event; no history row or audit event without its
     assessment (half-written);
   * no key stored more than once (duplicates); stored but never acknowledged rows (a request
     in flight at a kill whose client gave up) are allowed only if replaying their key returns
     them;
   * every key is replayed with the same body: it must answer the stored assessment
     (`Idempotent-Replayed: true`) and store nothing; a second full replay must leave the count
     unchanged;
   * where each kill landed: a stored write whose committing attempt (the one in flight when
     the row was recorded) got no answer was committed with its answer lost; it is put down to
     the kill that came between its commit and the end of that attempt. A kill with at least
     one such write "landed between a commit and its response". A lost answer with no kill in
     that interval is a failure (an error after a commit).

Prints, per drill: writes acknowledged, kills, lost = 0, duplicates = 0, kills that landed
between a commit and its response (N of K, and each kill's detail). Exits non-zero on any loss,
duplicate, half-written record or mismatch.

A process kill leaves the operating system's page cache intact: whatever a commit had written
reaches the disk anyway, so no kill here can show that SQLite's synchronous=FULL or PostgreSQL's
fsync=on make a commit durable against power loss. That needs a VM or a dm-flakey /
dm-log-writes device; it is out of scope, and the output says so.

    .venv/bin/python bench/crash.py                          # the three drills, 5 kills each
    .venv/bin/python bench/crash.py --db sqlite --kills 2 --clients 2 --per-client 10   # smoke
    .venv/bin/python bench/crash.py --db postgresql-server --timing random
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    LiveServer,
    api_client,
    assessment_body,
    create_patient,
    machine_facts,
    migrated_database,
    results_path,
    work_dir,
)
from bench.pgcluster import ClusterUnavailable, CommitWithholdingProxy, ThrowawayCluster
from tests.dbs import migrate

LEASE_SECONDS = 2
KEY_DEADLINE_S = 60.0  # a client stops retrying one key after this long
REPLAY_DEADLINE_S = 30.0
AIM_WINDOW_S = 3.0  # a targeted kill looks this long for a commit to cut, then kills anyway
FREEZE_DRAIN_S = 0.02  # frozen service: let answers already on the wire reach their clients
DRILLS = ("postgresql", "sqlite", "postgresql-server")
PAGE_CACHE_NOTE = (
    "a process kill (of the service or of PostgreSQL) leaves the operating system's page cache "
    "intact, so what a commit wrote reaches the disk anyway: these kills cannot show that "
    "SQLite's synchronous=FULL or PostgreSQL's fsync=on survive a power loss (that needs a VM "
    "or a dm-flakey / dm-log-writes device: out of scope)"
)


@dataclass
class Ack:
    key: str
    client: int
    status: int
    body: dict[str, Any]
    replayed: bool
    attempts: int


@dataclass
class Attempt:
    key: str
    started: float  # wall clock (time.time), comparable with the rows' recorded_at
    ended: float
    outcome: str  # "201", "replayed", "409", "5xx", "transport", "other"


@dataclass
class KillEvent:
    number: int
    target: str  # "service" or "postgresql-server"
    at: float  # wall clock, just before SIGKILL
    in_flight: int
    aimed: bool  # the targeted timing saw a commit whose answer was not out yet
    processes: int = 0
    aim_seconds: float = 0.0  # how long the targeted timing looked
    looks: int = 0  # how many times it froze the service and looked
    writes_answer_lost: int = 0  # committed writes whose answer this kill lost

    @property
    def landed(self) -> bool:
        return self.writes_answer_lost > 0


@dataclass
class ClientStats:
    sent: int = 0
    transport_errors: int = 0
    in_flight_409: int = 0
    server_errors: int = 0
    unexpected: list[str] = field(default_factory=list)


@dataclass
class DrillReport:
    backend: str
    target: str = "service"
    timing: str = "targeted"
    kills: int = 0
    kills_aimed: int = 0
    kills_landed: int = 0
    commits_answer_lost: int = 0
    answers_lost_without_kill: int = 0
    kill_events: list[dict[str, Any]] = field(default_factory=list)
    crash_recoveries: int | None = None
    writes_acknowledged: int = 0
    keys_used: int = 0
    requests_in_flight_at_kills: int = 0
    retries_answered_by_replay: int = 0
    transport_errors: int = 0
    in_flight_409_answers: int = 0
    server_errors: int = 0
    unexpected_answers: list[str] = field(default_factory=list)
    keys_given_up: int = 0
    stored_before_replay: int = 0
    stored_unacknowledged: int = 0
    lost: int = 0
    changed: int = 0
    duplicates: int = 0
    half_written: int = 0
    orphan_history_or_audit: int = 0
    replay_mismatches: int = 0
    stored_by_first_replay: int = 0
    stored_by_second_replay: int = 0
    abandoned_claims_left: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Drill:
    def __init__(
        self,
        backend: str,
        database_url: str,
        data_dir: Path,
        *,
        clients: int,
        per_client: int,
        kills: int,
        seed: int,
        timing: str = "targeted",
        target: str = "service",
        direct_url: str | None = None,
        cluster: ThrowawayCluster | None = None,
        proxy: CommitWithholdingProxy | None = None,
    ) -> None:
        self.backend = backend
        # The service's URL (through the proxy for the postgresql-server drill) and the drill's
        # own, direct one for its checks.
        self.service_url = database_url
        self.database_url = direct_url or database_url
        self.timing = timing
        self.target = target
        self.cluster = cluster
        self.proxy = proxy
        if target == "postgresql-server":
            assert cluster is not None
            assert proxy is not None
        self.clients = clients
        self.per_client = per_client
        self.kills = kills
        self.rng = random.Random(seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.server = LiveServer(
            self.service_url,
            data_dir,
            extra_env={"IDEMPOTENCY_LEASE_SECONDS": str(LEASE_SECONDS)},
        )
        self.lock = threading.Lock()
        self.acks: dict[str, Ack] = {}
        self.bodies: dict[str, dict[str, Any]] = {}
        self.given_up: set[str] = set()
        self.busy = [False] * clients
        self.current = [""] * clients
        self.attempts: list[list[Attempt]] = [[] for _ in range(clients)]
        self.events: list[KillEvent] = []
        self.stats = [ClientStats() for _ in range(clients)]
        self.abort = threading.Event()
        self.report = DrillReport(backend, target=target, timing=timing)
        self._probe_engine: Any = None
        self.patient_id = ""
        self.token = ""

    # ------------------------------------------------------------------ load

    def _client_loop(self, cid: int) -> None:
        stats = self.stats[cid]
        path = f"/v1/patients/{self.patient_id}/assessments"
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=15.0) as client:
            for seq in range(self.per_client):
                if self.abort.is_set():
                    return
                key = f"crash-{self.run_id}-c{cid}-{seq}"
                body = assessment_body(
                    cid * self.per_client + seq, visit=f"c{cid}-{seq}", notes=key
                )
                with self.lock:
                    self.bodies[key] = body
                deadline = time.monotonic() + KEY_DEADLINE_S
                attempts = 0
                while True:
                    attempts += 1
                    stats.sent += 1
                    self.current[cid] = key
                    started = time.time()
                    self.busy[cid] = True
                    try:
                        r = client.post(path, json=body, headers={"Idempotency-Key": key})
                    except httpx.TransportError:
                        r = None
                        stats.transport_errors += 1
                    finally:
                        self.busy[cid] = False
                    self.attempts[cid].append(Attempt(key, started, time.time(), _outcome(r)))
                    if r is not None and r.status_code in (200, 201):
                        ack = Ack(
                            key,
                            cid,
                            r.status_code,
                            r.json(),
                            r.headers.get("Idempotent-Replayed") == "true",
                            attempts,
                        )
                        with self.lock:
                            self.acks[key] = ack
                        break
                    if r is not None and r.status_code == 409:
                        stats.in_flight_409 += 1  # a killed request's lease: wait it out
                        pause = 0.25
                    elif r is None or r.status_code >= 500:
                        if r is not None:
                            stats.server_errors += 1
                        pause = 0.05 + 0.1 * self.rng.random()
                    else:
                        stats.unexpected.append(f"{key}: {r.status_code} {r.text[:200]}")
                        with self.lock:
                            self.given_up.add(key)
                        break
                    if time.monotonic() > deadline or self.abort.is_set():
                        with self.lock:
                            self.given_up.add(key)
                        break
                    time.sleep(pause)

    def _acked(self) -> int:
        with self.lock:
            return len(self.acks)

    def run_load_with_kills(self) -> None:
        threads = [
            threading.Thread(target=self._client_loop, args=(cid,), daemon=True)
            for cid in range(self.clients)
        ]
        for t in threads:
            t.start()
        total = self.clients * self.per_client
        try:
            for k in range(self.kills):
                threshold = total * (k + 1) // (self.kills + 1)
                wait_until = time.monotonic() + 120
                while self._acked() < threshold and time.monotonic() < wait_until:
                    if not any(t.is_alive() for t in threads):
                        break
                    time.sleep(0.005)
                if not any(t.is_alive() for t in threads):
                    self.report.problems.append(
                        f"load finished after {self.report.kills} kills; use more --per-client"
                    )
                    break
                number = self.report.kills + 1
                if self.target == "service":
                    event = self._kill_service(number)
                else:
                    event = self._kill_postgres(number)
                self.events.append(event)
                self.report.requests_in_flight_at_kills += event.in_flight
                self.report.kills += 1
                what = "the service" if self.target == "service" else "the PostgreSQL server"
                print(
                    f"  [{self.backend}] kill -9 #{number} of {what} after {self._acked()} "
                    f"acknowledged writes ({event.in_flight} in flight"
                    f"{', aimed at a commit' if event.aimed else ''})",
                    flush=True,
                )
                time.sleep(self.rng.uniform(0.05, 0.3))
                if self.target == "service":
                    self.server.start(timeout=60)
                else:
                    assert self.cluster is not None
                    self.cluster.start(timeout=60)  # crash recovery; the service stays up
        finally:
            deadline = time.monotonic() + KEY_DEADLINE_S + 60
            for t in threads:
                t.join(timeout=max(0.1, deadline - time.monotonic()))
            if any(t.is_alive() for t in threads):
                self.abort.set()
                self.report.problems.append("client threads did not finish in time")
                for t in threads:
                    t.join(timeout=20)

    # ------------------------------------------------------------------ kills

    def _probe(self) -> Any:
        """The drill's own engine for the aiming query (SQLite: no connection kept open)."""
        if self._probe_engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            if self.database_url.startswith("sqlite"):
                self._probe_engine = create_engine(
                    self.database_url, poolclass=NullPool, connect_args={"timeout": 0.5}
                )
            else:
                self._probe_engine = create_engine(self.database_url, pool_size=1, max_overflow=0)
        return self._probe_engine

    def _in_flight_unanswered(self) -> set[str]:
        with self.lock:
            return {
                self.current[c]
                for c in range(self.clients)
                if self.busy[c] and self.current[c] not in self.acks
            }

    def _committed_unanswered(self) -> list[str]:
        """Keys whose request is still in flight and whose write has already committed."""
        from sqlalchemy import select

        from app.db.models import IdempotencyKey

        candidates = sorted(self._in_flight_unanswered())
        if not candidates:
            return []
        with self._probe().connect() as conn:
            rows = conn.execute(
                select(IdempotencyKey.key).where(
                    IdempotencyKey.key.in_(candidates),
                    IdempotencyKey.response_status.is_not(None),
                )
            ).all()
        return [r.key for r in rows]

    def _kill_service(self, number: int) -> KillEvent:
        """kill -9 the service's process group; targeted: freeze it (SIGSTOP), look for a
        committed write whose answer has not left, kill it frozen if there is one, else thaw
        it and look again a few milliseconds later (at most AIM_WINDOW_S)."""
        aimed = False
        looks = 0
        t0 = time.monotonic()
        if self.timing == "random":
            time.sleep(self.rng.uniform(0.0, 0.03))  # land anywhere in a request
        else:
            pgid = self.server.pid
            assert pgid is not None
            deadline = t0 + AIM_WINDOW_S
            while True:
                looks += 1
                os.killpg(pgid, signal.SIGSTOP)
                kill_now = False
                try:
                    time.sleep(FREEZE_DRAIN_S)
                    try:
                        cut = self._committed_unanswered()
                    except Exception as exc:  # a busy SQLite file: look again
                        print(f"  [{self.backend}] aiming query failed: {exc!r}", flush=True)
                        cut = []
                    if cut:  # still unanswered a moment later: the answer is not on the wire
                        time.sleep(FREEZE_DRAIN_S)
                        aimed = bool(set(cut) & self._in_flight_unanswered())
                    kill_now = aimed or time.monotonic() > deadline
                finally:
                    if not kill_now:
                        os.killpg(pgid, signal.SIGCONT)
                if kill_now:
                    break  # kill it frozen
                time.sleep(self.rng.uniform(0.0005, 0.008))
        in_flight = sum(self.busy)
        at = time.time()
        self.server.kill()  # SIGKILL reaches a stopped process too
        aim = 0.0 if self.timing == "random" else time.monotonic() - t0
        return KillEvent(number, "service", at, in_flight, aimed, aim_seconds=aim, looks=looks)

    def _kill_postgres(self, number: int) -> KillEvent:
        """kill -9 the throwaway cluster; targeted: the proxy does it on receiving the reply to
        a write's COMMIT, before passing it on (at most AIM_WINDOW_S, then here anyway)."""
        assert self.cluster is not None
        assert self.proxy is not None
        cluster = self.cluster
        state: dict[str, Any] = {}

        def cut() -> None:
            try:
                state["in_flight"] = sum(self.busy)
                state["at"] = time.time()
                state["processes"] = cluster.crash()
            except Exception as exc:  # raised again in the drill's thread
                state["error"] = exc

        aimed = False
        t0 = time.monotonic()
        if self.timing == "random":
            time.sleep(self.rng.uniform(0.0, 0.03))
            cut()
        else:
            self.proxy.arm(cut)
            if not self.proxy.fired.wait(AIM_WINDOW_S) and self.proxy.disarm():
                cut()
            else:
                self.proxy.fired.wait(30)
                aimed = True
        if "error" in state:
            raise state["error"]
        if "at" not in state:
            raise RuntimeError("the PostgreSQL kill did not happen")
        return KillEvent(
            number,
            "postgresql-server",
            state["at"],
            state["in_flight"],
            aimed,
            processes=state["processes"],
            aim_seconds=0.0 if self.timing == "random" else time.monotonic() - t0,
        )

    # ------------------------------------------------------------------ checks

    def _stored(self) -> dict[str, Any]:
        """What the database holds for this patient, read directly (not through the API)."""
        from sqlalchemy import select

        from app.db.database import Database
        from app.db.models import Assessment, AuditEvent, IdempotencyKey, RecordVersion

        db = Database(self.database_url)
        try:
            with db.read() as s:
                pid = uuid.UUID(self.patient_id)
                columns = (
                    Assessment.id,
                    Assessment.version,
                    Assessment.content,
                    Assessment.scores,
                    Assessment.recorded_at,
                )
                rows = s.execute(select(*columns).where(Assessment.patient_id == pid)).all()
                ids = {r.id for r in rows}
                versions = s.execute(
                    select(
                        RecordVersion.resource_id,
                        RecordVersion.version,
                        RecordVersion.content,
                        RecordVersion.scores,
                    ).where(RecordVersion.resource_type == "assessment")
                ).all()
                audits = s.execute(
                    select(AuditEvent.resource_id).where(
                        AuditEvent.action == "create-assessment",
                        AuditEvent.patient_id == pid,
                        AuditEvent.status == 201,  # refusals (409 in flight ...) are audited too
                    )
                ).all()
                abandoned = s.execute(
                    select(IdempotencyKey.key).where(
                        IdempotencyKey.response_status.is_(None),
                        IdempotencyKey.key.like(f"crash-{self.run_id}-%"),
                    )
                ).all()
        finally:
            db.dispose()
        v1 = {v.resource_id: v for v in versions if v.version == 1}
        audit_count = Counter(a.resource_id for a in audits)
        half = []
        for r in rows:
            v = v1.get(r.id)
            if v is None or v.content != r.content or v.scores != r.scores or not r.scores:
                half.append(str(r.id))
            elif audit_count[r.id] != 1:
                half.append(f"{r.id} (audit events: {audit_count[r.id]})")
        orphans = [str(v.resource_id) for v in versions if v.resource_id not in ids]
        orphans += [str(a) for a in audit_count if a not in ids]
        by_key = Counter(str((r.content or {}).get("notes")) for r in rows)
        return {
            "count": len(rows),
            "ids_by_key": {str((r.content or {}).get("notes")): str(r.id) for r in rows},
            "recorded_by_key": {
                str((r.content or {}).get("notes")): _epoch(r.recorded_at) for r in rows
            },
            "duplicates": sum(n - 1 for n in by_key.values() if n > 1),
            "half_written": half,
            "orphans": orphans,
            "abandoned_claims": len(abandoned),
        }

    def _replay(self, client: httpx.Client, key: str) -> httpx.Response | None:
        path = f"/v1/patients/{self.patient_id}/assessments"
        deadline = time.monotonic() + REPLAY_DEADLINE_S
        while time.monotonic() < deadline:
            try:
                r = client.post(path, json=self.bodies[key], headers={"Idempotency-Key": key})
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if r.status_code == 409:  # a lease left by a killed request: retry after it
                time.sleep(LEASE_SECONDS / 4)
                continue
            return r
        return None

    def _where_kills_landed(self, recorded: dict[str, float]) -> None:
        """Put each committed write whose answer was lost down to the kill that lost it."""
        rep = self.report
        tries: defaultdict[str, list[Attempt]] = defaultdict(list)
        for log in self.attempts:
            for attempt in log:
                tries[attempt.key].append(attempt)
        events = sorted(self.events, key=lambda e: e.at)
        for key, committed_at in sorted(recorded.items()):
            mine = sorted(tries.get(key, []), key=lambda a: a.started)
            # the attempt in flight when the row was recorded (its commit came later still)
            during = [a for a in mine if a.started <= committed_at <= a.ended]
            if not during:
                rep.problems.append(f"{key}: recorded at {committed_at:.6f}, during no attempt")
                continue
            attempt = during[-1]
            if attempt.outcome == "201":
                continue  # committed and answered
            rep.commits_answer_lost += 1
            killers = [e for e in events if committed_at <= e.at <= attempt.ended]
            if killers:
                killers[0].writes_answer_lost += 1
            else:
                rep.answers_lost_without_kill += 1
                rep.problems.append(
                    f"{key}: committed, but its attempt ended {attempt.outcome} with no kill"
                )
        rep.kills_aimed = sum(e.aimed for e in self.events)
        rep.kills_landed = sum(e.landed for e in self.events)
        rep.kill_events = [{**asdict(e), "landed": e.landed} for e in self.events]

    def verify(self) -> None:
        rep = self.report
        rep.writes_acknowledged = len(self.acks)
        rep.keys_used = len(self.bodies)
        rep.keys_given_up = len(self.given_up)
        for st in self.stats:
            rep.transport_errors += st.transport_errors
            rep.in_flight_409_answers += st.in_flight_409
            rep.server_errors += st.server_errors
            rep.unexpected_answers += st.unexpected
        rep.retries_answered_by_replay = sum(1 for a in self.acks.values() if a.replayed)

        before = self._stored()
        rep.stored_before_replay = before["count"]
        rep.duplicates = before["duplicates"]
        rep.half_written = len(before["half_written"])
        rep.orphan_history_or_audit = len(before["orphans"])
        rep.abandoned_claims_left = before["abandoned_claims"]
        stored_keys = set(before["ids_by_key"])
        rep.stored_unacknowledged = len(stored_keys - set(self.acks))
        self._where_kills_landed(before["recorded_by_key"])

        with api_client(self.server) as client:
            for key, ack in self.acks.items():
                aid = ack.body.get("id")
                r = client.get(f"/v1/assessments/{aid}")
                if r.status_code != 200:
                    rep.lost += 1
                    rep.problems.append(f"acknowledged {key} -> {aid}: GET {r.status_code}")
                elif r.json() != ack.body:
                    rep.changed += 1
                    rep.problems.append(f"acknowledged {key} -> {aid}: content differs")
                elif before["ids_by_key"].get(key) != aid:
                    rep.lost += 1
                    rep.problems.append(f"acknowledged {key} -> {aid}: not the stored row")

            # Replay every key twice: the first may store keys that never committed (their
            # client gave up); the second must store nothing at all.
            for rnd in (1, 2):
                count_before = self._stored()["count"]
                new = 0
                for key in sorted(self.bodies):
                    r = self._replay(client, key)
                    if r is None or r.status_code != 201:
                        rep.replay_mismatches += 1
                        status = None if r is None else r.status_code
                        rep.problems.append(f"replay {rnd} of {key}: {status}")
                        continue
                    was_replayed = r.headers.get("Idempotent-Replayed") == "true"
                    stored_id = before["ids_by_key"].get(key)
                    if not was_replayed:
                        new += 1
                        if rnd == 2 or key in self.acks or stored_id is not None:
                            rep.replay_mismatches += 1
                            rep.problems.append(f"replay {rnd} of {key} stored a new assessment")
                    elif key in self.acks and r.json() != self.acks[key].body:
                        rep.replay_mismatches += 1
                        rep.problems.append(f"replay {rnd} of {key} answered another body")
                    elif stored_id is not None and r.json().get("id") != stored_id:
                        rep.replay_mismatches += 1
                        rep.problems.append(f"replay {rnd} of {key} answered another id")
                after = self._stored()
                if after["count"] != count_before + new:
                    rep.problems.append(
                        f"replay {rnd}: count {count_before} -> {after['count']}, expected +{new}"
                    )
                if rnd == 1:
                    rep.stored_by_first_replay = new
                else:
                    rep.stored_by_second_replay = after["count"] - count_before
                rep.duplicates = max(rep.duplicates, after["duplicates"])
                rep.half_written = max(rep.half_written, len(after["half_written"]))

        if rep.kills < self.kills:
            rep.problems.append(f"only {rep.kills} of {self.kills} kills happened")
        for name in ("lost", "changed", "duplicates", "half_written", "orphan_history_or_audit"):
            if getattr(rep, name):
                rep.problems.append(f"{name} = {getattr(rep, name)}")
        if before["half_written"]:
            rep.problems.append(f"half-written: {before['half_written'][:5]}")
        if rep.unexpected_answers:
            rep.problems.append(f"unexpected answers: {rep.unexpected_answers[:3]}")
        unacked_stored = stored_keys - set(self.acks)
        if unacked_stored - self.given_up:
            rep.problems.append(f"stored keys nobody sent: {sorted(unacked_stored)[:3]}")

    def run(self) -> DrillReport:
        t0 = time.monotonic()
        self.server.start(timeout=60)
        try:
            self.token = self.server.admin_key
            with api_client(self.server) as client:
                self.patient_id = create_patient(client, f"crash-{self.backend}")
            self.run_load_with_kills()
            self.verify()
        except Exception as exc:
            self.report.problems.append(f"drill error: {exc!r}")
            log = self.server.log_path
            if log.exists():
                print(log.read_text()[-2000:], file=sys.stderr)
        finally:
            self.abort.set()
            self.server.stop()
            if self._probe_engine is not None:
                self._probe_engine.dispose()
        self.report.seconds = time.monotonic() - t0
        return self.report


def _outcome(r: httpx.Response | None) -> str:
    if r is None:
        return "transport"
    if r.status_code in (200, 201):
        return "replayed" if r.headers.get("Idempotent-Replayed") == "true" else "201"
    if r.status_code == 409:
        return "409"
    return "5xx" if r.status_code >= 500 else "other"


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def print_report(rep: DrillReport) -> None:
    what = "the service killed" if rep.target == "service" else "the PostgreSQL server killed"
    print(f"\n== {rep.backend}: {'OK' if rep.ok else 'FAILED'} ({rep.seconds:.1f} s; {what})")
    print(f"  writes acknowledged: {rep.writes_acknowledged} (of {rep.keys_used} keys)")
    print(
        f"  kills: {rep.kills} (requests in flight at the kills: {rep.requests_in_flight_at_kills};"
        f" timing {rep.timing}: {rep.kills_aimed} aimed at a commit whose answer was not out)"
    )
    print(
        f"  kills that landed between a commit and its response: {rep.kills_landed} of "
        f"{rep.kills} (committed writes whose answer a kill lost: {rep.commits_answer_lost}; "
        f"lost answers without a kill: {rep.answers_lost_without_kill})"
    )
    for e in rep.kill_events:
        where = (
            f"landed between a commit and its response ({e['writes_answer_lost']} write"
            f"{'s' if e['writes_answer_lost'] != 1 else ''} committed, answer lost)"
            if e["landed"]
            else "landed nowhere interesting (no write had committed without its answer)"
        )
        extra = f", {e['processes']} PostgreSQL processes" if e["processes"] else ""
        aimed = "aimed" if e["aimed"] else "not aimed"
        if rep.timing == "targeted":
            plural = "s" if e["looks"] != 1 else ""
            looks = f" in {e['looks']} look{plural}" if e["looks"] else ""
            aimed += f" after {e['aim_seconds']:.2f} s{looks}"
        print(f"    kill #{e['number']} ({e['in_flight']} in flight, {aimed}{extra}): {where}")
    if rep.crash_recoveries is not None:
        print(f"  PostgreSQL crash recoveries (its log): {rep.crash_recoveries}")
    print(f"  lost = {rep.lost}")
    print(f"  duplicates = {rep.duplicates}")
    print(
        f"  half-written = {rep.half_written}, orphan history/audit rows = "
        f"{rep.orphan_history_or_audit}, changed = {rep.changed}"
    )
    print(
        f"  retries answered from the stored response (committed, answer lost in the kill): "
        f"{rep.retries_answered_by_replay}; 409 in-flight answers waited out: "
        f"{rep.in_flight_409_answers}; transport errors: {rep.transport_errors}; "
        f"5xx: {rep.server_errors}"
    )
    print(
        f"  stored {rep.stored_before_replay} before replay; stored but unacknowledged: "
        f"{rep.stored_unacknowledged}; keys given up: {rep.keys_given_up}; "
        f"stored by replay 1: {rep.stored_by_first_replay}, by replay 2: "
        f"{rep.stored_by_second_replay}; abandoned claims left: {rep.abandoned_claims_left}"
    )
    for problem in rep.problems[:20]:
        print(f"  PROBLEM: {problem}")


def run_service_drill(backend: str, args: argparse.Namespace, seed: int) -> DrillReport:
    """The service killed, on a new database (for PostgreSQL: on the shared test server)."""
    with work_dir(f"bench-crash-{backend}-") as tmp, migrated_database(backend, tmp) as url:
        drill = Drill(
            backend,
            url,
            tmp / "data",
            clients=args.clients,
            per_client=args.per_client,
            kills=args.kills,
            seed=seed,
            timing=args.timing,
        )
        (tmp / "data").mkdir()
        return drill.run()


def run_postgres_server_drill(args: argparse.Namespace, seed: int) -> DrillReport | str:
    """PostgreSQL killed: a throwaway cluster of our own, behind the withholding proxy, with the
    service kept running. Returns why it was skipped when this machine cannot run a cluster."""
    backend = "postgresql-server"
    try:
        root = Path(tempfile.mkdtemp(prefix="bench-crash-pgcluster-"))
    except OSError as exc:
        return f"no temporary directory: {exc}"
    cluster: ThrowawayCluster | None = None
    proxy: CommitWithholdingProxy | None = None
    try:
        try:
            cluster = ThrowawayCluster(root)
        except ClusterUnavailable as exc:
            return str(exc)
        rep = DrillReport(backend, target="postgresql-server", timing=args.timing)
        t0 = time.monotonic()
        try:
            cluster.init()
            cluster.start(timeout=60)
            cluster.create_database("crash")
            direct = cluster.url("crash")
            migrate(direct)
            proxy = CommitWithholdingProxy(cluster.port)
            proxy.start()
        except Exception as exc:
            rep.problems.append(f"setting up the cluster: {exc!r}")
            rep.seconds = time.monotonic() - t0
            return rep
        print(
            f"  [{backend}] throwaway cluster: {cluster.bindir}, 127.0.0.1:{cluster.port} "
            f"(proxy :{proxy.port}), data in {cluster.data}",
            flush=True,
        )
        (root / "service").mkdir()
        drill = Drill(
            backend,
            proxy.service_url("crash"),
            root / "service",
            clients=args.clients,
            per_client=args.pg_server_per_client,
            kills=args.kills,
            seed=seed,
            timing=args.timing,
            target="postgresql-server",
            direct_url=direct,
            cluster=cluster,
            proxy=proxy,
        )
        rep = drill.run()
        rep.crash_recoveries = cluster.recoveries()
        if rep.crash_recoveries < rep.kills:
            rep.problems.append(
                f"PostgreSQL logged {rep.crash_recoveries} crash recoveries for {rep.kills} kills"
            )
        if rep.problems:
            print(cluster.log(), file=sys.stderr)
        rep.seconds = time.monotonic() - t0
        return rep
    finally:
        if proxy is not None:
            proxy.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--db",
        default=",".join(DRILLS),
        help=f"comma list of drills: {', '.join(DRILLS)} (all)",
    )
    parser.add_argument("--kills", type=int, default=5, help="kill -9 this many times (5)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (4)")
    parser.add_argument("--per-client", type=int, default=150, help="assessments per client (150)")
    parser.add_argument(
        "--pg-server-per-client",
        type=int,
        default=200,
        help="assessments per client in the postgresql-server drill (200)",
    )
    parser.add_argument(
        "--timing",
        choices=("targeted", "random"),
        default="targeted",
        help="aim each kill at a commit whose answer is not out yet, or kill anywhere (targeted)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (kill timing)")
    args = parser.parse_args(argv)
    drills = [b.strip() for b in args.db.split(",") if b.strip()]
    unknown = sorted(set(drills) - set(DRILLS))
    if unknown:
        parser.error(f"unknown drill(s) {unknown}; use {', '.join(DRILLS)}")
    for per_client in (args.per_client, args.pg_server_per_client):
        if per_client * args.clients < 2 * (args.kills + 1):
            parser.error("too few writes for that many kills: raise --per-client")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    facts = machine_facts()
    print(
        f"machine: nproc={facts['nproc']}, {facts['cpu_model']}; kills={args.kills} "
        f"clients={args.clients} per-client={args.per_client} "
        f"pg-server-per-client={args.pg_server_per_client} timing={args.timing} seed={seed}"
    )
    reports = []
    skipped: dict[str, str] = {}
    for backend in drills:
        if backend == "postgresql-server":
            outcome = run_postgres_server_drill(args, seed)
            if isinstance(outcome, str):
                skipped[backend] = outcome
                print(f"\n== {backend}: SKIPPED ({outcome})")
                continue
            rep = outcome
        else:
            rep = run_service_drill(backend, args, seed)
        print_report(rep)
        reports.append(rep)
    print(f"\nnote: {PAGE_CACHE_NOTE}.")
    try:
        out = results_path("crash")
        out.write_text(
            json.dumps(
                {
                    "machine": facts,
                    "args": vars(args),
                    "seed": seed,
                    "reports": [asdict(r) for r in reports],
                    "skipped": skipped,
                    "note": PAGE_CACHE_NOTE,
                },
                indent=2,
            )
        )
        print(f"results written to {out.relative_to(ROOT)}")
    except OSError as exc:  # read-only checkout: the printed report is what matters
        print(f"could not write results: {exc}")
    ok = all(r.ok for r in reports)
    summary = [
        f"{r.backend}: acknowledged {r.writes_acknowledged}, kills {r.kills}, lost = {r.lost}, "
        f"duplicates = {r.duplicates}, landed between commit and response {r.kills_landed}/"
        f"{r.kills}"
        for r in reports
    ] + [f"{name}: skipped" for name in skipped]
    print("\n" + " | ".join(summary))
    print("CRASH DRILL PASSED" if ok else "CRASH DRILL FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
