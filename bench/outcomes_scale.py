"""How GET /v1/patients/{id}/outcomes scales with the number of assessments.

For patients with 10, 100, 1,000 and 10,000 assessments (stored through the service layer, in
a fresh migrated database) it times, in-process:

* `http`: the whole endpoint through the ASGI app (TestClient: auth, audit, JSON);
* `service`: `app.services.outcomes.patient_outcomes` in a read transaction (DB load + core +
  shaping into the response model), without HTTP;
* `core`: the pure `app.scoring.outcomes.compute_outcomes` on the same assessments.

and prints median wall time, process CPU time, and the ratio to the 10-assessment case. The
check: the 10,000 case must take at most 1,000 x 1.5 times the 10 case (1,000 times the data;
an O(n log n) or better implementation is far inside it). Prints PASS/FAIL and exits non-zero
on FAIL.

    .venv/bin/python bench/outcomes_scale.py                      # SQLite
    .venv/bin/python bench/outcomes_scale.py --db sqlite,postgresql
    .venv/bin/python bench/outcomes_scale.py --quick              # fewer repeats
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    bulk_assessments,
    machine_facts,
    migrated_database,
    pasi_inputs,
    percentile,
    results_path,
    work_dir,
)

SIZES = (10, 100, 1_000, 10_000)
ALLOWED = 1_000 * 1.5  # the 10,000 case may take at most this many times the 10 case


def measure(fn: Callable[[], object], *, repeats: int, budget_s: float) -> dict[str, float]:
    """Median wall and process-CPU seconds over up to `repeats` runs (>= 3, time-bounded)."""
    fn()  # warm caches (statement cache, imports)
    walls: list[float] = []
    cpus: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(max(3, repeats)):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if i >= 2 and time.perf_counter() > deadline:
            break
    return {"wall": percentile(walls, 50), "cpu": percentile(cpus, 50), "runs": len(walls)}


def synthetic_scores(n: int) -> list[Any]:
    """DatedScores shaped like the seeded assessments, for the pure core."""
    from app.schemas.scores import PasiScoreRequest
    from app.scoring.outcomes import DatedScore
    from app.services.scoring import compute_scores

    recorded = datetime(2024, 1, 1, tzinfo=UTC)
    tenths: dict[int, int] = {}
    out = []
    for i in range(n):
        key = i % 12
        if key not in tenths:
            body = PasiScoreRequest.model_validate({"pasi": pasi_inputs(i)})
            tenths[key] = compute_scores(body).pasi_tenths
        out.append(
            DatedScore(
                assessment_id=str(uuid.uuid4()),
                assessed_on=date(1990, 1, 1) + timedelta(days=i),
                recorded_at=recorded + timedelta(seconds=i),
                pasi_tenths=tenths[key],
            )
        )
    return out


def run_backend(backend: str, sizes: tuple[int, ...], quick: bool) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from app.auth.access import DEV_ACCESS
    from app.db.database import Database
    from app.formats.outcomes import outcomes_json
    from app.main import create_app
    from app.scoring.outcomes import OutcomeOptions, compute_outcomes
    from app.services.api_keys import BOOTSTRAP_KEY_FILE
    from app.services.outcomes import patient_outcomes
    from app.settings import Settings

    repeats = {10: 60, 100: 40, 1_000: 15, 10_000: 7}
    budget = 2.0 if quick else 8.0
    rows: dict[int, dict[str, Any]] = {}
    with work_dir(f"bench-outcomes-{backend}-") as tmp, migrated_database(backend, tmp) as url:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            data_dir=tmp / "data",
            rate_limit_per_minute=0,
        )
        app = create_app(settings)
        with contextlib.ExitStack() as stack:
            with contextlib.redirect_stdout(io.StringIO()):  # the first-start key banner
                client = stack.enter_context(TestClient(app))
            token = (tmp / "data" / BOOTSTRAP_KEY_FILE).read_text().strip()
            client.headers["Authorization"] = f"Bearer {token}"
            patients: dict[int, str] = {}
            for n in sizes:
                r = client.post(
                    "/v1/patients",
                    json={"identifiers": [{"system": "https://bench.example", "value": f"n{n}"}]},
                )
                r.raise_for_status()
                patients[n] = r.json()["id"]
                t0 = time.perf_counter()
                bulk_assessments(url, patients[n], n, batch=1000)
                print(
                    f"  [{backend}] seeded {n:>6} assessments in {time.perf_counter() - t0:5.1f} s",
                    flush=True,
                )
            db = Database(url)
            try:
                for n in sizes:
                    pid = patients[n]

                    def http(pid: str = pid, n: int = n) -> None:
                        resp = client.get(f"/v1/patients/{pid}/outcomes")
                        if resp.status_code != 200 or len(resp.json()["series"]) != n:
                            raise RuntimeError(f"outcomes for {n}: {resp.status_code}")

                    def svc(pid: str = pid) -> None:
                        with db.read() as session:
                            outcomes_json(
                                patient_outcomes(
                                    session, DEV_ACCESS, uuid.UUID(pid), OutcomeOptions(), None
                                )
                            )

                    scores = synthetic_scores(n)

                    def core(scores: list[Any] = scores) -> None:
                        compute_outcomes(scores, OutcomeOptions(), ())

                    rep = repeats.get(n, 5) // (3 if quick else 1)
                    rows[n] = {
                        "http": measure(http, repeats=rep, budget_s=budget),
                        "service": measure(svc, repeats=rep, budget_s=budget),
                        "core": measure(core, repeats=rep * 3, budget_s=budget),
                    }
                    print(
                        f"  [{backend}] n={n:>6}: http {1000 * rows[n]['http']['wall']:9.2f} ms, "
                        f"service {1000 * rows[n]['service']['wall']:9.2f} ms, "
                        f"core {1000 * rows[n]['core']['wall']:8.3f} ms",
                        flush=True,
                    )
            finally:
                db.dispose()
    return {"backend": backend, "sizes": rows}


def report(result: dict[str, Any]) -> bool:
    rows = result["sizes"]
    base = rows[min(rows)]
    print()
    print(f"{result['backend']}: median wall ms (process CPU ms) and ratio to the 10 case")
    header = f"{'assessments':>11} " + " ".join(
        f"{name + ' wall':>12} {'cpu':>9} {'x10':>7}" for name in ("http", "service", "core")
    )
    print(header)
    print("-" * len(header))
    for n, row in sorted(rows.items()):
        cells = []
        for name in ("http", "service", "core"):
            m = row[name]
            ratio = m["wall"] / base[name]["wall"] if base[name]["wall"] else math.nan
            m["ratio_to_10"] = ratio
            cells.append(f"{1000 * m['wall']:12.3f} {1000 * m['cpu']:9.3f} {ratio:7.1f}")
        print(f"{n:>11} " + " ".join(cells))
    ok = True
    if 10 in rows and 10_000 in rows:
        for name in ("http", "service", "core"):
            ratio = rows[10_000][name]["wall"] / rows[10][name]["wall"]
            per_item = (rows[10_000][name]["wall"] - rows[1_000][name]["wall"]) / 9_000
            verdict = "PASS" if ratio <= ALLOWED else "FAIL"
            if name == "http":
                ok = ratio <= ALLOWED
            print(
                f"  {name:<7} 10,000 vs 10: {ratio:7.1f}x (allowed {ALLOWED:.0f}x) {verdict}; "
                f"marginal cost {1e6 * per_item:.1f} µs per assessment"
            )
    else:
        print("  (10 and 10,000 not both measured: no verdict)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql or both (comma list)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter budgets")
    parser.add_argument(
        "--max", type=int, default=10_000, help="largest patient to measure (default 10000)"
    )
    args = parser.parse_args(argv)
    facts = machine_facts()
    print(
        f"machine: nproc={facts['nproc']}, {facts['cpu_model']}, load {facts['loadavg_at_start']}"
    )
    sizes = tuple(n for n in SIZES if n <= args.max)
    results = []
    ok = True
    for backend in [b.strip() for b in args.db.split(",") if b.strip()]:
        result = run_backend(backend, sizes, args.quick)
        ok = report(result) and ok
        results.append(result)
    out = results_path("outcomes_scale")
    out.write_text(json.dumps({"machine": facts, "args": vars(args), "results": results}, indent=2))
    print(f"\n{'PASS' if ok else 'FAIL'}; results written to {out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
