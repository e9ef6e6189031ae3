"""A batch of 1,000 assessments vs 1,000 single POSTs, against the real service, in one run.

Starts the service (uvicorn, as production runs it) on a fresh migrated database, records 1,000
assessments one `POST /v1/patients/{id}/assessments` at a time (over one keep-alive
connection), then 1,000 in one `POST /v1/assessments:batch` (`per_item`, every item with an
idempotency key, 100 patients found by identifier, created by the batch), and prints the time
per assessment of each and their ratio. Goal: the batch at least 5x faster per assessment.

    .venv/bin/python bench/batch_vs_single.py                 # SQLite
    .venv/bin/python bench/batch_vs_single.py --db postgresql
    .venv/bin/python bench/batch_vs_single.py --count 200     # smaller (smoke)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    api_client,
    assessment_body,
    create_patient,
    machine_facts,
    migrated_database,
    results_path,
    service,
    work_dir,
)

GOAL = 5.0
SYSTEM = "https://bench.example/subject"


def run(backend: str, count: int) -> dict[str, Any]:
    with (
        work_dir("pss-batch-") as tmp,
        migrated_database(backend, tmp) as url,
        service(url, tmp / "data") as server,
        api_client(server, timeout=300) as client,
    ):
        patient = create_patient(client, "single")
        started = time.perf_counter()
        for step in range(count):
            r = client.post(f"/v1/patients/{patient}/assessments", json=assessment_body(step))
            if r.status_code != 201:
                raise RuntimeError(f"single POST: {r.status_code} {r.text[:300]}")
        single_s = time.perf_counter() - started
        items = [
            {
                "key": f"B-{step % 100}/{step}",
                "patient": {
                    "identifier": {"system": SYSTEM, "value": f"B-{step % 100}"},
                    "create": {},
                },
                "assessment": assessment_body(step),
            }
            for step in range(count)
        ]
        started = time.perf_counter()
        r = client.post("/v1/assessments:batch", json={"mode": "per_item", "items": items})
        batch_s = time.perf_counter() - started
        if r.status_code != 200:
            raise RuntimeError(f"batch: {r.status_code} {r.text[:300]}")
        statuses = {x["status"] for x in r.json()["results"]}
        if statuses != {201}:
            raise RuntimeError(f"batch items answered {statuses}")
    return {
        "backend": backend,
        "count": count,
        "single_ms_per_assessment": round(1000 * single_s / count, 3),
        "batch_ms_per_assessment": round(1000 * batch_s / count, 3),
        "ratio": round(single_s / batch_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql or both (comma)")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    results = [run(b, args.count) for b in args.db.split(",")]
    ok = True
    for r in results:
        verdict = "PASS" if r["ratio"] >= GOAL else "FAIL"
        ok &= verdict == "PASS"
        print(
            f"{r['backend']}: {r['count']} single POSTs {r['single_ms_per_assessment']} ms each, "
            f"batch {r['batch_ms_per_assessment']} ms each: {r['ratio']}x (goal >= {GOAL}x) "
            f"{verdict}"
        )
    path = results_path("batch_vs_single")
    path.write_text(json.dumps({"machine": machine_facts(), "results": results}, indent=2))
    print(f"written to {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
