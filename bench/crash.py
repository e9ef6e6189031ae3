"""Crash drill: kill -9 the server mid-load, restart it, and prove no acknowledged write is lost,
none is stored twice and none is half-written.

For each database (PostgreSQL and SQLite by default):

1. start the real service (uvicorn subprocess, `tests.live.LiveServer`) with
   IDEMPOTENCY_LEASE_SECONDS=2 on a fresh migrated database and create one patient;
2. `--clients` threads post assessments, each with a unique Idempotency-Key (also stored in the
   assessment's `notes`, so every stored row names the key that wrote it). A client that gets no
   answer (connection reset by the kill, refused while restarting, 5xx) or 409 "in flight"
   retries the SAME key and body, as an integrator would, until it gets an answer (bounded);
3. meanwhile the server process group is killed with SIGKILL `--kills` times, at evenly spaced
   points of the load, and restarted each time on the same database and port;
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
     unchanged.

Prints, per database: writes acknowledged, kills, lost = 0, duplicates = 0 (and the details).
Exits non-zero on any loss, duplicate, half-written record or mismatch.

    .venv/bin/python bench/crash.py                          # both databases, 5 kills, 4 clients
    .venv/bin/python bench/crash.py --db sqlite --kills 2 --clients 2 --per-client 10   # smoke
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
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

LEASE_SECONDS = 2
KEY_DEADLINE_S = 60.0  # a client stops retrying one key after this long
REPLAY_DEADLINE_S = 30.0


@dataclass
class Ack:
    key: str
    client: int
    status: int
    body: dict[str, Any]
    replayed: bool
    attempts: int


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
    kills: int = 0
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
    ) -> None:
        self.backend = backend
        self.database_url = database_url
        self.clients = clients
        self.per_client = per_client
        self.kills = kills
        self.rng = random.Random(seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.server = LiveServer(
            database_url,
            data_dir,
            extra_env={"IDEMPOTENCY_LEASE_SECONDS": str(LEASE_SECONDS)},
        )
        self.lock = threading.Lock()
        self.acks: dict[str, Ack] = {}
        self.bodies: dict[str, dict[str, Any]] = {}
        self.given_up: set[str] = set()
        self.busy = [False] * clients
        self.stats = [ClientStats() for _ in range(clients)]
        self.abort = threading.Event()
        self.report = DrillReport(backend)
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
                    self.busy[cid] = True
                    try:
                        r = client.post(path, json=body, headers={"Idempotency-Key": key})
                    except httpx.TransportError:
                        r = None
                        stats.transport_errors += 1
                    finally:
                        self.busy[cid] = False
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
                time.sleep(self.rng.uniform(0.0, 0.03))  # land anywhere in a request
                self.report.requests_in_flight_at_kills += sum(self.busy)
                self.server.kill()
                self.report.kills += 1
                print(
                    f"  [{self.backend}] kill -9 #{self.report.kills} after "
                    f"{self._acked()} acknowledged writes",
                    flush=True,
                )
                time.sleep(self.rng.uniform(0.05, 0.3))
                self.server.start(timeout=60)
        finally:
            deadline = time.monotonic() + KEY_DEADLINE_S + 60
            for t in threads:
                t.join(timeout=max(0.1, deadline - time.monotonic()))
            if any(t.is_alive() for t in threads):
                self.abort.set()
                self.report.problems.append("client threads did not finish in time")
                for t in threads:
                    t.join(timeout=20)

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
                columns = (Assessment.id, Assessment.version, Assessment.content, Assessment.scores)
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
        self.report.seconds = time.monotonic() - t0
        return self.report


def print_report(rep: DrillReport) -> None:
    print(f"\n== {rep.backend}: {'OK' if rep.ok else 'FAILED'} ({rep.seconds:.1f} s)")
    print(f"  writes acknowledged: {rep.writes_acknowledged} (of {rep.keys_used} keys)")
    print(
        f"  kills: {rep.kills} (requests in flight at the kills: {rep.requests_in_flight_at_kills})"
    )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", default="postgresql,sqlite", help="comma list of databases")
    parser.add_argument("--kills", type=int, default=5, help="kill -9 this many times (5)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (4)")
    parser.add_argument("--per-client", type=int, default=150, help="assessments per client (150)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (kill timing)")
    args = parser.parse_args(argv)
    if args.per_client * args.clients < 2 * (args.kills + 1):
        parser.error("too few writes for that many kills: raise --per-client")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    facts = machine_facts()
    print(
        f"machine: nproc={facts['nproc']}, {facts['cpu_model']}; kills={args.kills} "
        f"clients={args.clients} per-client={args.per_client} seed={seed}"
    )
    reports = []
    for backend in [b.strip() for b in args.db.split(",") if b.strip()]:
        with work_dir(f"bench-crash-{backend}-") as tmp, migrated_database(backend, tmp) as url:
            drill = Drill(
                backend,
                url,
                tmp / "data",
                clients=args.clients,
                per_client=args.per_client,
                kills=args.kills,
                seed=seed,
            )
            (tmp / "data").mkdir()
            rep = drill.run()
        print_report(rep)
        reports.append(rep)
    try:
        out = results_path("crash")
        out.write_text(
            json.dumps(
                {
                    "machine": facts,
                    "args": vars(args),
                    "seed": seed,
                    "reports": [asdict(r) for r in reports],
                },
                indent=2,
            )
        )
        print(f"\nresults written to {out.relative_to(ROOT)}")
    except OSError as exc:  # read-only checkout: the printed report is what matters
        print(f"could not write results: {exc}")
    ok = all(r.ok for r in reports)
    summary = " | ".join(
        f"{r.backend}: acknowledged {r.writes_acknowledged}, kills {r.kills}, lost = {r.lost}, "
        f"duplicates = {r.duplicates}"
        for r in reports
    )
    print("\n" + summary)
    print("CRASH DRILL PASSED" if ok else "CRASH DRILL FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
