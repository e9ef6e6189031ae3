"""Cohort statistics at scale: GET /v1/cohorts/time-to-event over 10,000 patients x 20
assessments, against lifelines computing the same Kaplan–Meier on the same data, in one run.

Seeds a fresh migrated database with Core bulk inserts (patients, identifiers and assessments
whose stored content and scores are computed by the service's own scoring, as a POST stores
them; no history rows, which cohort reads never touch), then times, in-process:

* `endpoint`: the whole request through the ASGI app (TestClient: auth, the cohort read in
  three queries with only the columns the event needs, 10,000 per-patient event times by the
  core's `event_observation`, Kaplan–Meier, the audit event naming every patient, JSON);
* `lifelines`: what a data manager would run instead, end to end on the same rows: the same
  assessments read from the database (SQLAlchemy Core into pandas), time to clearance
  (PASI 100) per patient derived with vectorised pandas (baseline = the flagged or earliest
  assessment, event = first later PASI 0, else censored at the latest), then
  `KaplanMeierFitter().fit`, its confidence interval and `median_survival_times`;

checks that both give the same estimate (every step, the median and its interval, to 1e-9),
and prints both medians, the ratio endpoint / lifelines and a breakdown of the endpoint
(database read, per-patient time to event, Kaplan–Meier core, audit event; each timed alone,
so they need not add up to the request). Goal: ratio <= 1 (not slower than
lifelines end to end); the script reports it and exits 0 either way unless the estimates
differ (exit 1).

    .venv/bin/python bench/cohort_scale.py                       # SQLite, 10,000 patients
    .venv/bin/python bench/cohort_scale.py --db sqlite,postgresql
    .venv/bin/python bench/cohort_scale.py --quick               # 1,000 patients, fewer runs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
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
    machine_facts,
    migrated_database,
    percentile,
    results_path,
    work_dir,
)

ASSESSMENTS_PER_PATIENT = 20
VISIT_EVERY_DAYS = 28
SYSTEM = "https://bench.example/subject"
DAY0 = date(2015, 1, 5)
TOLERANCE = 1e-9
#: PASI levels a course moves through (each scored once by the service's scoring).
LEVELS = (36.0, 30.0, 25.0, 20.0, 16.0, 12.0, 8.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.0)


# --------------------------------------------------------------------------- seeding


def _scored_levels() -> dict[float, dict[str, Any]]:
    """For each PASI level, the stored columns of an assessment at that level."""
    from app.schemas.records import AssessmentIn
    from app.services.assessments import content_of
    from app.services.scoring import compute_scores
    from tests.api.helpers import pasi_inputs

    columns = {}
    for level in LEVELS:
        body = AssessmentIn.model_validate(
            {"assessed_on": "2015-01-05", "pasi": pasi_inputs(level)}
        )
        computed = compute_scores(body)
        columns[level] = {
            "pasi_tenths": computed.pasi_tenths,
            "bsa_percent": computed.bsa_percent,
            "iga": computed.iga,
            "content": content_of(body),
            "scores": computed.scores.model_dump(mode="json"),
        }
        assert computed.pasi_tenths == round(level * 10)
    return columns


def _course(rng: random.Random) -> list[tuple[int, float]]:
    """(day, PASI level) of one patient's 20 visits: a response at its own pace, clearance for
    some, relapse for some, jittered days so that the estimate has many distinct steps."""
    start = rng.randrange(0, 5)  # baseline PASI 36 ... 16
    pace = rng.choice((0, 1, 1, 1, 2, 2, 3))
    relapse_at = rng.choice((None, None, None, 8, 11, 14))
    level = start
    rows = [(0, LEVELS[level])]
    for visit in range(1, ASSESSMENTS_PER_PATIENT):
        if relapse_at is not None and visit >= relapse_at:
            level = max(start, level - rng.choice((0, 1, 2)))
        else:
            level = min(len(LEVELS) - 1, level + pace + rng.choice((-1, 0, 0, 1)))
            level = max(level, 0)
        day = VISIT_EVERY_DAYS * visit + rng.randint(-3, 3)
        rows.append((day, LEVELS[level]))
    return rows


def seed(database_url: str, organization_id: str, patients: int, seed_value: int = 13) -> None:
    """`patients` patients with 20 assessments each, in Core bulk inserts of a few thousand
    rows per statement."""
    from sqlalchemy import insert

    from app.db.database import Database
    from app.db.models import Assessment, Patient, PatientIdentifier, table_of

    rng = random.Random(seed_value)
    levels = _scored_levels()
    org = uuid.UUID(organization_id)
    now = datetime.now(UTC)
    db = Database(database_url)
    try:
        batch = 500  # patients per transaction (10,000 assessments)
        for first in range(0, patients, batch):
            patient_rows, identifier_rows, assessment_rows = [], [], []
            for n in range(first, min(patients, first + batch)):
                pid = uuid.uuid4()
                created = now + timedelta(microseconds=n)
                patient_rows.append(
                    {
                        "id": pid,
                        "organization_id": org,
                        "sex": None,
                        "birth_year": None,
                        "created_at": created,
                        "created_by": "bench-seed",
                    }
                )
                identifier_rows.append(
                    {
                        "patient_id": pid,
                        "organization_id": org,
                        "system": SYSTEM,
                        "value": f"S-{n:06d}",
                        "position": 0,
                    }
                )
                for visit, (day, level) in enumerate(_course(rng)):
                    recorded = created + timedelta(seconds=visit)
                    assessment_rows.append(
                        {
                            "id": uuid.uuid4(),
                            "patient_id": pid,
                            "version": 1,
                            "entered_in_error": False,
                            "assessed_on": DAY0 + timedelta(days=day),
                            "recorded_at": recorded,
                            "updated_at": recorded,
                            "visit": f"Week {4 * visit}",
                            "is_baseline": visit == 0,
                            **levels[level],
                        }
                    )
            with db.transaction() as session:
                connection = session.connection()
                connection.execute(insert(table_of(Patient)), patient_rows)
                connection.execute(insert(table_of(PatientIdentifier)), identifier_rows)
                connection.execute(insert(table_of(Assessment)), assessment_rows)
    finally:
        db.dispose()


# --------------------------------------------------------------------------- lifelines


def lifelines_end_to_end(database_url: str) -> dict[str, Any]:
    """Read the same assessments, derive time to clearance per patient with pandas, fit."""
    import pandas as pd
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times
    from sqlalchemy import create_engine, select

    from app.db.models import Assessment, Patient

    engine = create_engine(database_url)
    try:
        query = (
            select(
                Assessment.patient_id,
                Assessment.assessed_on,
                Assessment.recorded_at,
                Assessment.pasi_tenths,
                Assessment.is_baseline,
            )
            .join(Patient, Patient.id == Assessment.patient_id)
            .where(Assessment.entered_in_error.is_(False))
        )
        with engine.connect() as connection:
            rows = connection.execute(query).all()
    finally:
        engine.dispose()
    frame = pd.DataFrame(
        rows, columns=["patient_id", "assessed_on", "recorded_at", "pasi", "is_baseline"]
    )
    frame["assessed_on"] = pd.to_datetime(frame["assessed_on"])
    frame = frame.sort_values(["patient_id", "assessed_on", "recorded_at"], kind="stable")
    frame["order"] = frame.groupby("patient_id", sort=False).cumcount()
    flagged = frame[frame["is_baseline"].astype(bool)].groupby("patient_id")["order"].min()
    baseline_order = frame["patient_id"].map(flagged).fillna(0)
    counting = frame[frame["order"] >= baseline_order].copy()
    baseline_on = counting.groupby("patient_id", sort=False)["assessed_on"].transform("first")
    counting["day"] = (counting["assessed_on"] - baseline_on).dt.days
    per_patient = counting.groupby("patient_id", sort=False)
    last_day = per_patient["day"].max()
    cleared_day = counting[counting["pasi"] == 0].groupby("patient_id", sort=False)["day"].min()
    event = last_day.index.isin(cleared_day.index)
    duration = cleared_day.reindex(last_day.index).fillna(last_day)

    fitter = KaplanMeierFitter().fit(duration.to_numpy(), event)
    survival = fitter.survival_function_.iloc[:, 0]
    interval = fitter.confidence_interval_
    median_ci = median_survival_times(interval)
    return {
        "n": len(duration),
        "events": int(event.sum()),
        "table": fitter.event_table,
        "survival": survival,
        "interval": interval,
        "median": fitter.median_survival_time_,
        "median_ci": (median_ci.iloc[0, 0], median_ci.iloc[0, 1]),
    }


def _finite_or_none(value: float) -> int | None:
    return None if math.isinf(value) else int(value)


def differences(body: dict[str, Any], fit: dict[str, Any]) -> list[str]:
    """Where the endpoint's estimate and lifelines' differ (empty when they agree to 1e-9)."""
    found = []
    if (body["n"], body["events"]) != (fit["n"], fit["events"]):
        found.append(f"n/events {body['n']}/{body['events']} vs {fit['n']}/{fit['events']}")
    table, survival, interval = fit["table"], fit["survival"], fit["interval"]
    for step in body["steps"]:
        t = float(step["day"])
        expected = (
            int(table.loc[t, "at_risk"]),
            int(table.loc[t, "observed"]),
            int(table.loc[t, "censored"]),
        )
        if (step["at_risk"], step["events"], step["censored"]) != expected:
            found.append(f"day {step['day']}: counts {step} vs {expected}")
        for name, value in (
            ("survival", survival.loc[t]),
            ("ci_lower", interval.loc[t].iloc[0]),
            ("ci_upper", interval.loc[t].iloc[1]),
        ):
            if abs(step[name] - value) > TOLERANCE:
                found.append(f"day {step['day']}: {name} {step[name]!r} vs {value!r}")
    tie = any(abs(s["survival"] - 0.5) <= TOLERANCE for s in body["steps"])
    if not tie and body["median_days"] != _finite_or_none(fit["median"]):
        found.append(f"median {body['median_days']} vs {fit['median']}")
    expected_ci = [_finite_or_none(v) for v in fit["median_ci"]]
    if body["median_ci"] != expected_ci:
        found.append(f"median_ci {body['median_ci']} vs {expected_ci}")
    return found[:10]


# --------------------------------------------------------------------------- timing


def measure(fn: Callable[[], object], repeats: int) -> dict[str, Any]:
    """Median wall and process-CPU seconds of `repeats` runs after one warm-up run."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall": percentile(walls, 50), "cpu": percentile(cpus, 50), "walls": walls}


def run_backend(backend: str, patients: int, repeats: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from app.auth.access import DEV_ACCESS
    from app.db.database import Database
    from app.main import create_app
    from app.scoring.cohort import CohortEvent, kaplan_meier
    from app.scoring.outcomes import OutcomeOptions
    from app.services import audit, cohorts
    from app.services.api_keys import BOOTSTRAP_KEY_FILE
    from app.settings import Settings

    with work_dir(f"bench-cohort-{backend}-") as tmp, migrated_database(backend, tmp) as url:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            data_dir=tmp / "data",
            rate_limit_per_minute=0,
        )
        with contextlib.ExitStack() as stack:
            with contextlib.redirect_stdout(io.StringIO()):  # the first-start key banner
                client = stack.enter_context(TestClient(create_app(settings)))
            token = (tmp / "data" / BOOTSTRAP_KEY_FILE).read_text().strip()
            client.headers["Authorization"] = f"Bearer {token}"
            organizations = client.get("/v1/organizations").json()["items"]
            (default,) = [o for o in organizations if o["name"] == "default"]
            t0 = time.perf_counter()
            seed(url, default["id"], patients)
            seeded = time.perf_counter() - t0
            print(
                f"  [{backend}] seeded {patients:,} patients x {ASSESSMENTS_PER_PATIENT} "
                f"assessments in {seeded:.1f} s",
                flush=True,
            )

            answers: list[dict[str, Any]] = []

            def endpoint() -> None:
                r = client.get("/v1/cohorts/time-to-event", params={"event": "clearance"})
                if r.status_code != 200:
                    raise RuntimeError(f"time-to-event: {r.status_code} {r.text[:300]}")
                answers.append(r.json())

            fits: list[dict[str, Any]] = []
            timings = {
                "endpoint": measure(endpoint, repeats),
                "lifelines": measure(lambda: fits.append(lifelines_end_to_end(url)), repeats),
            }

            # Where the endpoint's time goes (the same service calls, outside HTTP). Only the
            # latest result of each is kept: a pile of them would slow the collector.
            db = Database(url)
            try:
                selection = cohorts.CohortSelection()
                loaded: list[Any] = []

                def load() -> None:
                    with db.read() as session:
                        loaded[:] = [cohorts.load_cohort_events(session, DEV_ACCESS, selection)]

                timings["read"] = measure(load, repeats)
                data = loaded[-1]
                observed: list[Any] = []

                def event_times() -> None:
                    observed[:] = [
                        cohorts.cohort_observations(data, CohortEvent.CLEARANCE, OutcomeOptions())
                    ]

                timings["event_times"] = measure(event_times, repeats)
                observations = observed[-1]
                timings["kaplan_meier"] = measure(lambda: kaplan_meier(observations), repeats)

                def audit_event() -> None:
                    with db.transaction() as session:
                        audit.record(
                            session,
                            DEV_ACCESS,
                            "GET",
                            "/v1/cohorts/time-to-event",
                            audit.AuditInfo("bench-cohort", patient_ids=data.patient_ids),
                            200,
                        )

                timings["audit"] = measure(audit_event, repeats)
            finally:
                db.dispose()

        body, fit = answers[-1], fits[-1]
        diffs = differences(body, fit)
        result = {
            "backend": backend,
            "patients": patients,
            "assessments": patients * ASSESSMENTS_PER_PATIENT,
            "seed_seconds": seeded,
            "km": {
                "n": body["n"],
                "events": body["events"],
                "censored": body["censored"],
                "steps": len(body["steps"]),
                "median_days": body["median_days"],
                "median_ci": body["median_ci"],
            },
            "timings": {k: {"wall": v["wall"], "cpu": v["cpu"]} for k, v in timings.items()},
            "same_estimate": not diffs,
            "differences": diffs,
        }
        ratio = timings["endpoint"]["wall"] / timings["lifelines"]["wall"]
        result["ratio"] = ratio
        km = result["km"]
        print(
            f"  [{backend}] estimate: n={km['n']:,}, events={km['events']:,}, "
            f"censored={km['censored']:,}, {km['steps']} steps, median {km['median_days']} "
            f"days {km['median_ci']}; same as lifelines to 1e-9: {'yes' if not diffs else 'NO'}"
        )
        for line in diffs:
            print(f"    {line}")
        return result


def report(result: dict[str, Any], repeats: int) -> None:
    t = result["timings"]
    print()
    print(
        f"{result['backend']}: {result['patients']:,} patients x {ASSESSMENTS_PER_PATIENT} "
        f"assessments; median of {repeats} runs, wall ms (process CPU ms)"
    )
    rows = [
        ("endpoint, end to end (GET /v1/cohorts/time-to-event)", "endpoint"),
        ("lifelines, end to end (DB read + pandas + KaplanMeierFitter)", "lifelines"),
        ("  endpoint part: cohort read (3 queries, lean scores)", "read"),
        ("  endpoint part: per-patient time to event (core)", "event_times"),
        ("  endpoint part: Kaplan–Meier (core)", "kaplan_meier"),
        ("  endpoint part: audit event naming every patient", "audit"),
    ]
    for label, key in rows:
        print(f"  {label:<62} {1000 * t[key]['wall']:9.1f} ({1000 * t[key]['cpu']:9.1f})")
    ratio = result["ratio"]
    verdict = "MET" if ratio <= 1 else "MISSED"
    print(
        f"  ratio endpoint / lifelines: {ratio:.2f} (goal <= 1: {verdict}); "
        f"Kaplan–Meier core alone vs lifelines end to end: "
        f"{t['kaplan_meier']['wall'] / t['lifelines']['wall']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql or both (comma list)")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 patients and 3 runs (default 10,000 and 5)"
    )
    parser.add_argument("--patients", type=int, default=None, help="override the cohort size")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    args = parser.parse_args(argv)
    patients = args.patients or (1_000 if args.quick else 10_000)
    repeats = args.repeats or (3 if args.quick else 5)
    facts = machine_facts()
    print(
        f"machine: nproc={facts['nproc']}, {facts['cpu_model']}, load {facts['loadavg_at_start']}"
    )
    results = []
    for backend in [b.strip() for b in args.db.split(",") if b.strip()]:
        result = run_backend(backend, patients, repeats)
        report(result, repeats)
        results.append(result)
    out = results_path("cohort_scale")
    out.write_text(json.dumps({"machine": facts, "args": vars(args), "results": results}, indent=2))
    same = all(r["same_estimate"] for r in results)
    print(
        f"\n{'SAME ESTIMATES' if same else 'ESTIMATES DIFFER'}; "
        f"results written to {out.relative_to(ROOT)}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
