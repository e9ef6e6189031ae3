"""Soak: minutes of mixed load against one server while its memory (RSS) is sampled.

Starts the service (uvicorn, uvloop, httptools) on a fresh migrated database, then `--clients`
threads send a mix of requests for `--minutes` minutes: scoring (40 %), recording assessments
(20 %), reads of assessments, lists and patients (25 %), outcomes of a patient with 200
assessments (15 %). Every `--sample-seconds` it reads VmRSS from /proc/<pid>/status of the
uvicorn process and all its children. Prints the start (after the first minute's warm-up, or
the first sample for short runs), end and maximum RSS, the growth, and the growth rate over the
second half of the run (a leak keeps growing there; warm-up does not). Not run in CI.

    .venv/bin/python bench/soak.py                           # 10 minutes, SQLite, 1 worker
    .venv/bin/python bench/soak.py --minutes 30 --db postgresql --workers 2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    SCORE_BODY,
    api_client,
    assessment_body,
    bulk_assessments,
    create_patient,
    machine_facts,
    migrated_database,
    process_tree_rss,
    results_path,
    service,
    work_dir,
)

MIX = (("score", 40), ("write", 20), ("read", 25), ("outcomes", 15))


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((p[0] - mx) * (p[1] - my) for p in points) / var


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (10)")
    parser.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (1)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (4)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period")
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    facts = machine_facts()
    print(
        f"machine: nproc={facts['nproc']}, {facts['cpu_model']}, load {facts['loadavg_at_start']}"
    )

    with (
        work_dir("bench-soak-") as tmp,
        migrated_database(args.db, tmp) as url,
        service(url, tmp / "data", workers=args.workers) as server,
    ):
        assert server.process is not None
        root_pid = server.process.pid
        with api_client(server) as client:
            writers = [create_patient(client, "soak-writer") for _ in range(args.clients)]
            followed = create_patient(client, "soak-200")
            bulk_assessments(url, followed, 200)
            first = client.post(f"/v1/patients/{writers[0]}/assessments", json=assessment_body(0))
            first.raise_for_status()
            known_assessment = first.json()["id"]

        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        lock = threading.Lock()
        stop = threading.Event()
        deadline = time.monotonic() + duration

        def worker(cid: int) -> None:
            rng = random.Random(cid)
            names = [m[0] for m in MIX]
            weights = [m[1] for m in MIX]
            step = 0
            headers = {"Authorization": f"Bearer {server.admin_key}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
                while not stop.is_set() and time.monotonic() < deadline:
                    op = rng.choices(names, weights)[0]
                    try:
                        if op == "score":
                            r = c.post("/v1/scores/pasi", json=SCORE_BODY)
                        elif op == "write":
                            step += 1
                            r = c.post(
                                f"/v1/patients/{writers[cid]}/assessments",
                                json=assessment_body(step % 10_000),
                            )
                        elif op == "read":
                            which = rng.randrange(3)
                            if which == 0:
                                r = c.get(f"/v1/assessments/{known_assessment}")
                            elif which == 1:
                                r = c.get(f"/v1/patients/{writers[cid]}/assessments?limit=50")
                            else:
                                r = c.get(f"/v1/patients/{followed}")
                        else:
                            r = c.get(f"/v1/patients/{followed}/outcomes")
                        ok = r.status_code < 400
                    except httpx.HTTPError:
                        ok = False
                    with lock:
                        counts[op] += 1
                        if not ok:
                            errors[op] += 1

        samples: list[tuple[float, int, dict[int, int]]] = []
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        next_report = t0 + 60
        try:
            while time.monotonic() < deadline:
                tree = process_tree_rss(root_pid)
                samples.append((time.monotonic() - t0, sum(tree.values()), tree))
                if time.monotonic() >= next_report:
                    with lock:
                        done = sum(counts.values())
                    print(
                        f"  {samples[-1][0] / 60:5.1f} min: RSS {samples[-1][1] / 1024:7.1f} MiB, "
                        f"{done} requests",
                        flush=True,
                    )
                    next_report += 60
                time.sleep(min(args.sample_seconds, max(0.0, deadline - time.monotonic())))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        tree = process_tree_rss(root_pid)
        samples.append((time.monotonic() - t0, sum(tree.values()), tree))
        elapsed = time.monotonic() - t0

    warm = next((s for s in samples if s[0] >= 60), samples[0]) if duration > 120 else samples[0]
    end = samples[-1]
    peak = max(samples, key=lambda s: s[1])
    half = [(s[0], s[1] / 1024) for s in samples if s[0] >= elapsed / 2]
    rate = slope_per_minute(half)
    total = sum(counts.values())
    print()
    print(f"{total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s), by kind: {dict(counts)}")
    print(f"errors: {dict(errors) or 0}")
    print(f"processes sampled: {len(end[2])} (uvicorn and children), {len(samples)} samples")
    print(f"RSS start {warm[1] / 1024:.1f} MiB (t={warm[0]:.0f} s)")
    print(f"RSS end   {end[1] / 1024:.1f} MiB")
    print(f"RSS max   {peak[1] / 1024:.1f} MiB (t={peak[0]:.0f} s)")
    growth = end[1] - warm[1]
    print(
        f"growth    {growth / 1024:+.1f} MiB ({100 * growth / warm[1]:+.1f} %); "
        f"second-half trend {rate:+.2f} MiB/min"
    )
    out = results_path("soak")
    out.write_text(
        json.dumps(
            {
                "machine": facts,
                "args": vars(args),
                "requests": dict(counts),
                "errors": dict(errors),
                "rss_kib": [(round(s[0], 1), s[1]) for s in samples],
                "growth_kib": growth,
                "second_half_mib_per_min": rate,
            },
            indent=2,
        )
    )
    print(f"results written to {out.relative_to(ROOT)}")
    return 1 if sum(errors.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
