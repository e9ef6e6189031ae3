"""HTTP throughput and latency of the service against a bare FastAPI endpoint, in the same run.

Starts, on 127.0.0.1, the bare app (bench/bare_app.py) and the service on SQLite and on
PostgreSQL (uvicorn with uvloop and httptools, as tests/live.py and production run it), then
drives every endpoint with the same load tool, `wrk`, as a separate process (one wrk thread,
keep-alive connections, a Lua script for the POST body and the Authorization header).

    .venv/bin/python bench/load.py                 # 10 s per scenario, 16 connections
    .venv/bin/python bench/load.py --duration 5    # shorter
    .venv/bin/python bench/load.py --quick         # 2 s per scenario: a smoke run

Scenarios: scoring; recording an assessment, without and with a new `Idempotency-Key` on
every request (what integrators send); outcomes of patients with 10 and 1,000 assessments
(repeated reads: served from the outcomes cache), and of the 1,000 uncached; on
the first database two diagnostics (scoring with no key, SCORES_OPEN; scoring and recording
with GC_FREEZE=false, to see what freezing the collector after start-up buys); on SQLite
recording with SQLITE_GROUP_COMMIT_MAX=1 (every transaction committed alone); on PostgreSQL
the assessment POST with 2 workers, as requests/s and as CPU per write.

Prints a table (requests/s, p50, p99, ratio to the bare endpoint measured in the same run)
with the goals: scoring >= 60 % of bare, recording an assessment >= 30 % (SQLite and
PostgreSQL), outcomes of a patient with 1,000 assessments >= 10 %. Results also go to
bench/results/load-<time>.json. The machine is shared and noisy: compare ratios from one run,
not absolute numbers across runs.

Needs wrk: `apt-get update && apt-get install -y wrk` (Debian/Ubuntu), `brew install wrk`
(macOS), or build it from https://github.com/wg/wrk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    SCORE_BODY,
    PgBackendCpu,
    UvicornProcess,
    api_client,
    assessment_body,
    bare_server,
    bulk_assessments,
    cpu_seconds,
    create_patient,
    descendants,
    machine_facts,
    migrated_database,
    results_path,
    service,
    work_dir,
)

WRK_INSTALL_HINT = (
    "wrk is not installed. Install it with `apt-get update && apt-get install -y wrk` "
    "(Debian/Ubuntu), `brew install wrk` (macOS), or build https://github.com/wg/wrk."
)

GOALS = {"score": 0.60, "record": 0.30, "outcomes1000": 0.10}

LUA_TEMPLATE = """\
wrk.method = "{method}"
{body_line}
wrk.headers["Content-Type"] = "application/json"
{auth_line}
{key_lines}

function done(summary, latency, requests)
  local f = assert(io.open("{out}", "w"))
  local e = summary.errors
  f:write(string.format(
    '{{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {{"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}, ' ..
    '"latency_us": {{"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  f:close()
end
"""


@dataclass
class Scenario:
    name: str
    label: str
    db: str
    workers: int
    method: str
    url: str
    body: bytes | None = None
    token: str | None = None
    goal_key: str | None = None
    server_pid: int | None = None
    database_url: str | None = None
    idempotency_keys: bool = False  # a new Idempotency-Key on every request, as integrators send


@dataclass
class Result:
    name: str
    label: str
    db: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cpu_ms: float | None = None
    pg_cpu_ms: float | None = None
    pg_backends: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    cpu_ratio: float | None = None
    goal: float | None = None
    verdict: str = ""


def _lua(scenario: Scenario, out: Path) -> str:
    if scenario.body is not None:
        body = scenario.body.decode()
        if "]==]" in body:
            raise ValueError("body cannot be embedded in a Lua long string")
        body_line = f"wrk.body = [==[{body}]==]"
    else:
        body_line = ""
    auth_line = (
        f'wrk.headers["Authorization"] = "Bearer {scenario.token}"' if scenario.token else ""
    )
    key_lines = ""
    if scenario.idempotency_keys:  # unique across wrk runs: the warm-up's keys differ too
        prefix = f"{scenario.name}-{uuid.uuid4().hex}-"
        key_lines = (
            "local n = 0\n"
            "request = function()\n"
            "  n = n + 1\n"
            f'  wrk.headers["Idempotency-Key"] = "{prefix}" .. n\n'
            "  return wrk.format()\n"
            "end"
        )
    return LUA_TEMPLATE.format(
        method=scenario.method,
        body_line=body_line,
        auth_line=auth_line,
        key_lines=key_lines,
        out=out.as_posix(),
    )


def run_wrk(
    scenario: Scenario, tmp: Path, *, duration: float, connections: int, warmup: float
) -> Result:
    lua_path = tmp / f"{scenario.name}.lua"
    out_path = tmp / f"{scenario.name}.json"

    def once(seconds: float) -> dict[str, Any]:
        out_path.unlink(missing_ok=True)
        lua_path.write_text(_lua(scenario, out_path))
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(lua_path),
            scenario.url,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if done.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"wrk failed for {scenario.name}: {done.stdout}\n{done.stderr}")
        data: dict[str, Any] = json.loads(out_path.read_text())
        return data

    if warmup > 0:
        once(warmup)
    server_pids = descendants(scenario.server_pid) if scenario.server_pid else []
    with PgBackendCpu(scenario.database_url) as pg:
        cpu_before = cpu_seconds(server_pids)
        data = once(duration)
        cpu_after = cpu_seconds(server_pids)
    per_request = 1000 / data["requests"] if data["requests"] else math.nan
    errors = sum(data["errors"].values())
    seconds = data["duration_us"] / 1e6
    return Result(
        name=scenario.name,
        label=scenario.label,
        db=scenario.db,
        workers=scenario.workers,
        rps=data["requests"] / seconds if seconds else 0.0,
        p50_ms=data["latency_us"]["p50"] / 1000,
        p99_ms=data["latency_us"]["p99"] / 1000,
        errors=errors,
        requests=data["requests"],
        raw=data,
        goal=GOALS.get(scenario.goal_key or ""),
        server_cpu_ms=(cpu_after - cpu_before) * per_request if server_pids else None,
        pg_cpu_ms=pg.seconds * per_request if pg.enabled else None,
        pg_backends=pg.backends if pg.enabled else None,
    )


def _check(url: str, token: str | None, method: str, body: bytes | None, expect: int) -> None:
    """One request before loading an endpoint, so a misconfigured scenario fails loudly."""
    import httpx

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = httpx.request(method, url, content=body, headers=headers, timeout=60)
    if r.status_code != expect:
        raise RuntimeError(f"{method} {url}: expected {expect}, got {r.status_code} {r.text[:300]}")


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or math.isnan(value) else format(value, spec)


def print_table(results: list[Result]) -> None:
    header = (
        f"{'scenario':<40} {'db':<10} {'w':>1} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'err':>4} {'/bare':>6} {'goal':>5} {'verdict':<7} {'cpu ms/req':>10} "
        f"{'pg ms/req':>9} {'pg conns':>8} {'cpu/bare':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = "" if r.ratio is None else f"{100 * r.ratio:5.1f}%"
        goal = "" if r.goal is None else f"{100 * r.goal:.0f}%"
        cpu_ratio = "" if r.cpu_ratio is None else f"{100 * r.cpu_ratio:6.1f}%"
        print(
            f"{r.label:<40} {r.db:<10} {r.workers:>1} {r.rps:>7.0f} {r.p50_ms:>7.2f} "
            f"{r.p99_ms:>8.2f} {r.errors:>4} {ratio:>6} {goal:>5} {r.verdict:<7} "
            f"{_fmt(r.server_cpu_ms, '10.3f'):>10} {_fmt(r.pg_cpu_ms, '9.3f'):>9} "
            f"{'' if r.pg_backends is None else r.pg_backends:>8} {cpu_ratio:>8}"
        )


def _set_ratios(rows: list[Result], bare_rps: float, bare_cpu_ms: float | None) -> None:
    for r in rows:
        r.ratio = r.rps / bare_rps if bare_rps else None
        spent = (r.server_cpu_ms or 0.0) + (r.pg_cpu_ms or 0.0)
        r.cpu_ratio = bare_cpu_ms / spent if bare_cpu_ms and spent > 0 else None
        if r.goal is not None and r.ratio is not None:
            r.verdict = "PASS" if r.ratio >= r.goal and r.errors == 0 else "MISS"
        elif r.errors:
            r.verdict = "ERRORS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections")
    parser.add_argument("--quick", action="store_true", help="2 s per scenario, short warm-up")
    parser.add_argument(
        "--db", default="sqlite,postgresql", help="databases: sqlite,postgresql (default both)"
    )
    parser.add_argument("--no-two-workers", action="store_true", help="skip the 2-worker runs")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios to run (score, record, record-key, outcomes10, "
        "outcomes1000, outcomes1000-cold); default all. The bare endpoint always runs.",
    )
    parser.add_argument(
        "--no-diagnostics", action="store_true", help="skip the scoring-without-auth run"
    )
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        return 2
    duration = 2.0 if args.quick else args.duration
    warmup = 1.0 if args.quick else 2.0
    backends = [b.strip() for b in args.db.split(",") if b.strip()]
    facts = machine_facts()
    print(
        f"machine: nproc={facts['nproc']}, {facts['cpu_model']}, load {facts['loadavg_at_start']}"
    )
    print(
        f"wrk -t1 -c{args.connections}, {duration:.0f} s per scenario after {warmup:.0f} s warm-up"
    )
    only = {name.strip() for name in args.only.split(",") if name.strip()}

    def chosen(name: str, backend: str) -> bool:
        return not only or name.removesuffix(f"-{backend}") in only

    score_bytes = json.dumps(SCORE_BODY).encode()
    record_bytes = json.dumps(assessment_body(0, visit="load")).encode()
    one_worker: list[Result] = []
    two_workers: list[Result] = []

    def measure(s: Scenario, tmp: Path, into: list[Result]) -> Result:
        r = run_wrk(s, tmp, duration=duration, connections=args.connections, warmup=warmup)
        into.append(r)
        print(
            f"  {s.label:<40} {s.db:<10} w={s.workers} {r.rps:7.0f} req/s  p50 {r.p50_ms:.2f} ms"
            f"  p99 {r.p99_ms:.2f} ms  errors {r.errors}  server CPU "
            f"{_fmt(r.server_cpu_ms, '.3f')} ms/req",
            flush=True,
        )
        return r

    def bare_case(name: str, label: str, proc: UvicornProcess, workers: int) -> Scenario:
        return Scenario(
            name, label, "-", workers, "POST", proc.url + "/bare", score_bytes,
            server_pid=proc.pid,
        )  # fmt: skip

    with work_dir("bench-load-") as tmp, ExitStack() as stack:
        bare = stack.enter_context(bare_server(tmp))
        _check(bare.url + "/bare", None, "POST", score_bytes, 200)
        bare_first = measure(
            bare_case("bare", "bare POST (FastAPI hello, same body)", bare, 1), tmp, one_worker
        )
        pg_for_two: tuple[str, Path] | None = None
        for backend in backends:
            url = stack.enter_context(migrated_database(backend, tmp))
            data_dir = tmp / f"data-{backend}"
            server = stack.enter_context(service(url, data_dir))
            assert server.process is not None
            token, pid = server.admin_key, server.process.pid
            with api_client(server) as client:
                writer = create_patient(client, "load-writer")
                p10 = create_patient(client, "load-10")
                p1000 = create_patient(client, "load-1000")
            bulk_assessments(url, p10, 10)
            bulk_assessments(url, p1000, 1000)
            base = server.url
            cases = [
                Scenario(f"score-{backend}", "POST /v1/scores/pasi", backend, 1, "POST",
                         f"{base}/v1/scores/pasi", score_bytes, token, "score", pid, url),
                Scenario(f"record-{backend}", "POST /v1/patients/{id}/assessments", backend, 1,
                         "POST", f"{base}/v1/patients/{writer}/assessments", record_bytes,
                         token, "record", pid, url),
                Scenario(f"record-key-{backend}", "  same, with an Idempotency-Key", backend,
                         1, "POST", f"{base}/v1/patients/{writer}/assessments", record_bytes,
                         token, "record", pid, url, idempotency_keys=True),
                Scenario(f"outcomes10-{backend}", "GET /v1/patients/{id}/outcomes (10)",
                         backend, 1, "GET", f"{base}/v1/patients/{p10}/outcomes", None, token,
                         None, pid, url),
                Scenario(f"outcomes1000-{backend}", "GET /v1/patients/{id}/outcomes (1,000)",
                         backend, 1, "GET", f"{base}/v1/patients/{p1000}/outcomes", None, token,
                         "outcomes1000", pid, url),
            ]  # fmt: skip
            for case in cases:
                if not chosen(case.name, backend):
                    continue
                expect = 201 if case.name.startswith("record") else 200
                _check(case.url, token, case.method, case.body, expect)
                measure(case, tmp, one_worker)
            if backend == "postgresql":
                pg_for_two = (url, data_dir)
            server.stop()  # free its connections before the next database
            # Outcomes with the cache off (every read cold: what the cache buys, and the
            # uncached cost that the first read after each write pays).
            if chosen(f"outcomes1000-cold-{backend}", backend):
                cold_env = {"OUTCOMES_CACHE_BYTES": "0"}
                with service(url, data_dir, extra_env=cold_env) as cold:
                    assert cold.process is not None
                    cold_case = Scenario(
                        f"outcomes1000-cold-{backend}",
                        "  same, uncached (OUTCOMES_CACHE_BYTES=0)",
                        backend,
                        1,
                        "GET",
                        f"{cold.url}/v1/patients/{p1000}/outcomes",
                        None,
                        cold.admin_key,
                        server_pid=cold.process.pid,
                        database_url=url,
                    )
                    _check(cold_case.url, cold_case.token, "GET", None, 200)
                    measure(cold_case, tmp, one_worker)
            if backend == "sqlite" and not args.no_diagnostics:
                # Each write transaction committed alone: what group commit buys.
                alone = {"SQLITE_GROUP_COMMIT_MAX": "1"}
                with service(url, data_dir, extra_env=alone) as single:
                    assert single.process is not None
                    for case in cases[1:3]:
                        diag = Scenario(
                            f"{case.name}-commit-alone",
                            f"  diagnostic: {case.label.strip()}, SQLITE_GROUP_COMMIT_MAX=1",
                            backend,
                            1,
                            case.method,
                            case.url.replace(base, single.url),
                            case.body,
                            single.admin_key,
                            server_pid=single.process.pid,
                            database_url=url,
                            idempotency_keys=case.idempotency_keys,
                        )
                        _check(diag.url, diag.token, diag.method, diag.body, 201)
                        measure(diag, tmp, one_worker)
            if backend == backends[0] and not args.no_diagnostics:
                # Same endpoint without the per-request API-key lookup (SCORES_OPEN, no key):
                # how much of the scoring cost is authentication.
                with service(url, data_dir, extra_env={"SCORES_OPEN": "true"}) as open_server:
                    assert open_server.process is not None
                    diag = Scenario(
                        f"score-open-{backend}",
                        "  diagnostic: same, SCORES_OPEN, no key",
                        backend,
                        1,
                        "POST",
                        f"{open_server.url}/v1/scores/pasi",
                        score_bytes,
                        server_pid=open_server.process.pid,
                        database_url=url,
                    )
                    _check(diag.url, None, diag.method, diag.body, 200)
                    measure(diag, tmp, one_worker)
                # The collector not frozen after start-up (GC_FREEZE=false): what freezing buys.
                with service(url, data_dir, extra_env={"GC_FREEZE": "false"}) as thawed:
                    assert thawed.process is not None
                    for case in cases[:2]:
                        diag = Scenario(
                            f"{case.name}-gc-thawed",
                            f"  diagnostic: {case.label.strip()}, GC_FREEZE=false",
                            backend,
                            1,
                            case.method,
                            case.url.replace(base, thawed.url),
                            case.body,
                            thawed.admin_key,
                            server_pid=thawed.process.pid,
                            database_url=url,
                        )
                        _check(
                            diag.url,
                            diag.token,
                            diag.method,
                            diag.body,
                            200 if case is cases[0] else 201,
                        )
                        measure(diag, tmp, one_worker)
        bare_second = measure(
            bare_case("bare-again", "bare POST (again: drift check)", bare, 1), tmp, one_worker
        )
        bare.stop()
        bare_rps = (bare_first.rps + bare_second.rps) / 2
        bare_cpu = _mean_cpu([bare_first, bare_second])
        _set_ratios(one_worker, bare_rps, bare_cpu)

        if pg_for_two is not None and not args.no_two_workers:
            url, data_dir = pg_for_two
            bare2 = stack.enter_context(bare_server(tmp, workers=2))
            bare2_r = measure(bare_case("bare-2w", "bare POST", bare2, 2), tmp, two_workers)
            bare2.stop()
            server2 = stack.enter_context(service(url, data_dir, workers=2))
            assert server2.process is not None
            with api_client(server2) as client:
                writer2 = create_patient(client, "load-writer-2w")
            rec2 = Scenario("record-postgresql-2w", "POST /v1/patients/{id}/assessments",
                            "postgresql", 2, "POST",
                            f"{server2.url}/v1/patients/{writer2}/assessments", record_bytes,
                            server2.admin_key, "record", server2.process.pid, url)  # fmt: skip
            _check(rec2.url, rec2.token, rec2.method, rec2.body, 201)
            measure(rec2, tmp, two_workers)
            server2.stop()
            _set_ratios(two_workers, bare2_r.rps, bare2_r.server_cpu_ms)

    print()
    print(
        f"bare reference, 1 worker: {bare_first.rps:.0f} then {bare_second.rps:.0f} req/s; "
        f"ratios are against the mean ({bare_rps:.0f} req/s, "
        f"{_fmt(bare_cpu, '.3f')} ms CPU/req)."
    )
    print(
        "/bare = req/s ratio (the goal); cpu/bare = bare CPU per request / (server + its "
        "PostgreSQL backends) CPU per request: the same capacity ratio, less sensitive to other "
        "load on a shared machine. pg conns = distinct PostgreSQL backends seen during the "
        "run (more than the connections in use means the pool opens and closes connections)."
    )
    print_table(one_worker)
    scaling = None
    if two_workers:
        print()
        print("2 workers (ratios against the bare app with 2 workers):")
        print_table(two_workers)
        one = next((r for r in one_worker if r.name == "record-postgresql"), None)
        if one is not None and one.rps and len(two_workers) > 1:
            scaling = two_workers[1].rps / one.rps
            print(
                f"PostgreSQL assessment POST, 2 workers / 1 worker: {scaling:.2f}x "
                f"({two_workers[1].rps:.0f} vs {one.rps:.0f} req/s; nproc={facts['nproc']}, "
                "shared with wrk and PostgreSQL)"
            )
            two = two_workers[1]
            print(
                "  CPU per write (service + its PostgreSQL backends): "
                f"{_fmt(_write_cpu(one), '.3f')} ms with 1 worker, "
                f"{_fmt(_write_cpu(two), '.3f')} ms with 2 (on 2 shared cores throughput cannot "
                "double; equal CPU per write means the second worker adds no overhead)"
            )
    misses = [r for r in one_worker + two_workers if r.verdict == "MISS"]
    out = results_path("load")
    out.write_text(
        json.dumps(
            {
                "machine": facts,
                "loadavg_at_end": os.getloadavg(),
                "args": vars(args),
                "duration_s": duration,
                "bare_rps_mean_1w": bare_rps,
                "bare_cpu_ms_1w": bare_cpu,
                "one_worker": [asdict(r) for r in one_worker],
                "two_workers": [asdict(r) for r in two_workers],
                "pg_record_two_over_one_worker": scaling,
                "goals": GOALS,
                "missed": [f"{r.name}" for r in misses],
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
    )
    print(f"\n{len(misses)} goal(s) missed; results written to {out.relative_to(ROOT)}")
    return 1 if misses else 0


def _write_cpu(r: Result) -> float | None:
    if r.server_cpu_ms is None:
        return None
    return r.server_cpu_ms + (r.pg_cpu_ms or 0.0)


def _mean_cpu(rows: list[Result]) -> float | None:
    values = [r.server_cpu_ms for r in rows if r.server_cpu_ms is not None]
    return sum(values) / len(values) if values else None


if __name__ == "__main__":
    sys.exit(main())
