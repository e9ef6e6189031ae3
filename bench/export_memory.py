"""Peak memory of the CSV export at two sizes: it must not grow with the row count.

Seeds 1,000 and then 10,000 active assessments (10 and 100 patients x 100, through the service
layer) in a fresh migrated database and runs the assessments CSV export exactly as
`GET /v1/exports/assessments.csv` streams it (`services.exports.export_rows` in a read
transaction, keyset batches, `formats.csv_export` one line at a time), consuming the bytes as a
client would. Peak Python heap (tracemalloc) is measured over the whole export; the check: the
10,000-row peak is at most 1.5x the 1,000-row peak (10x the rows).

    .venv/bin/python bench/export_memory.py                 # SQLite
    .venv/bin/python bench/export_memory.py --db postgresql
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bulk_assessments,
    machine_facts,
    migrated_database,
    results_path,
    work_dir,
)

SIZES = (1_000, 10_000)
PER_PATIENT = 100
ALLOWED = 1.5


def _seed_patients(url: str, count: int) -> list[str]:
    from app.auth.access import Access
    from app.auth.keys import ALL_SCOPES
    from app.db.database import Database
    from app.schemas.records import Identifier, PatientIn
    from app.services.patients import create_patient

    db = Database(url)
    seeder = Access(None, "bench-seed", ALL_SCOPES)
    try:
        with db.transaction() as session:
            return [
                str(
                    create_patient(
                        session,
                        seeder,
                        PatientIn(
                            identifiers=[
                                Identifier(
                                    system="https://bench.example/subject",
                                    value=f"E-{uuid.uuid4().hex}",
                                )
                            ]
                        ),
                    ).id
                )
                for _ in range(count)
            ]
    finally:
        db.dispose()


def _export(url: str) -> tuple[int, int, int, float]:
    """(rows, bytes, peak heap bytes, seconds) of one full CSV export."""
    from app.auth.access import Access
    from app.auth.keys import ALL_SCOPES
    from app.db.database import Database
    from app.formats.csv_export import assessments_csv
    from app.services.exports import ExportFilter, export_rows

    db = Database(url)
    reader = Access(None, "bench-export", ALL_SCOPES)
    try:
        tracemalloc.start()
        tracemalloc.reset_peak()
        started = time.perf_counter()
        lines = size = 0
        with db.read() as session:
            for chunk in assessments_csv(
                r for _u, r in export_rows(session, reader, ExportFilter())
            ):
                lines += 1
                size += len(chunk)
        seconds = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return lines - 1, size, peak, seconds
    finally:
        db.dispose()


def run(backend: str) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "sizes": []}
    with work_dir("pss-export-") as tmp, migrated_database(backend, tmp) as url:
        seeded = 0
        for target in SIZES:
            patients = _seed_patients(url, (target - seeded) // PER_PATIENT)
            for patient in patients:
                bulk_assessments(url, patient, PER_PATIENT)
            seeded = target
            rows, size, peak, seconds = _export(url)
            out["sizes"].append(
                {
                    "rows": rows,
                    "bytes": size,
                    "peak_heap_kib": peak // 1024,
                    "seconds": round(seconds, 2),
                }
            )
    small, large = out["sizes"]
    out["peak_ratio"] = round(large["peak_heap_kib"] / max(1, small["peak_heap_kib"]), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql or both (comma)")
    args = parser.parse_args(argv)
    results = [run(b) for b in args.db.split(",")]
    ok = True
    for r in results:
        for s in r["sizes"]:
            print(
                f"{r['backend']}: {s['rows']} rows, {s['bytes'] // 1024} KiB of CSV, peak heap "
                f"{s['peak_heap_kib']} KiB, {s['seconds']} s"
            )
        verdict = "PASS" if r["peak_ratio"] <= ALLOWED else "FAIL"
        ok &= verdict == "PASS"
        print(
            f"{r['backend']}: peak ratio 10,000 / 1,000 rows = {r['peak_ratio']} "
            f"(<= {ALLOWED}) {verdict}"
        )
    path = results_path("export_memory")
    path.write_text(json.dumps({"machine": machine_facts(), "results": results}, indent=2))
    print(f"written to {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
