"""The lean cohort read of a time-to-event estimate (`load_cohort_events` + `kaplan_meier_of`)
gives the estimate of the full path (`load_cohort` + `cohort_outcomes` + `event_time`) on
stored rows crafted where the lean read takes shortcuts: several assessments on one date
recorded in another order than inserted, entered-in-error rows, baseline flags, treatment
anchors, and a score the outcomes refuse (the same 422, naming the assessment)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from app.auth.access import DEV_ACCESS
from app.db.database import Database
from app.db.models import Assessment, table_of
from app.errors import InvalidParameter
from app.scoring.cohort import CohortEvent, KaplanMeier, event_time, kaplan_meier
from app.scoring.outcomes import ClearanceCriterion, OutcomeOptions, RelapseDefinition
from app.services import cohorts
from app.services.cohorts import CohortSelection
from tests.api.helpers import new_patient, new_treatment

DAY0 = date(2021, 1, 4)
RECORDED = datetime(2026, 1, 1, tzinfo=UTC)
AGENT = "UC-MSC infusion"


def _db(client: TestClient) -> Database:
    db: Database = client.app.state.runtime.db  # type: ignore[attr-defined]
    return db


def _rows(rng: random.Random, patient_id: uuid.UUID) -> list[dict[str, Any]]:
    """8-14 assessments: dates with repeats, recorded at shuffled times (so insertion order
    is not outcomes order), low PASI often, one baseline flag sometimes, a few in error."""
    n = rng.randint(8, 14)
    days = sorted(rng.choice((0, 7, 7, 14, 28, 28, 56, 84, 84, 112, 140, 168)) for _ in range(n))
    seconds = list(range(n))
    rng.shuffle(seconds)
    flagged = rng.choice([None, *range(n)])
    rows = []
    for i, day in enumerate(days):
        pasi = rng.choice((0, 0, 5, 10, 20, 40, 80, 120, 200, 300))
        rows.append(
            {
                "id": uuid.uuid4(),
                "patient_id": patient_id,
                "version": 1,
                "entered_in_error": rng.random() < 0.1,
                "assessed_on": DAY0 + timedelta(days=day),
                "recorded_at": RECORDED + timedelta(seconds=seconds[i]),
                "updated_at": RECORDED,
                "visit": f"Week {day // 7}",
                "is_baseline": i == flagged,
                "pasi_tenths": pasi if i else rng.choice((0, 150, 200, 300)),
                "bsa_percent": None,
                "iga": rng.choice((None, 0, 1, 2)),
                "content": {},
                "scores": {},
            }
        )
    rng.shuffle(rows)  # insertion order: not outcomes order
    return rows


@pytest.fixture
def crafted(client: TestClient) -> list[uuid.UUID]:
    rng = random.Random(13)
    ids = [uuid.UUID(new_patient(client, f"S-{n}")["id"]) for n in range(40)]
    for n, patient_id in enumerate(ids[:15]):
        new_treatment(client, str(patient_id), DAY0 + timedelta(days=7 * (n % 5)), agent=AGENT)
    rows = [row for patient_id in ids[:-2] for row in _rows(rng, patient_id)]  # 2 without
    with _db(client).transaction() as session:
        session.connection().execute(insert(table_of(Assessment)), rows)
    return ids


def _both(
    client: TestClient, selection: CohortSelection, event: CohortEvent, options: OutcomeOptions
) -> tuple[KaplanMeier, KaplanMeier]:
    db = _db(client)
    with db.read() as session:
        full_data = cohorts.load_cohort(session, DEV_ACCESS, selection)
        lean_data = cohorts.load_cohort_events(session, DEV_ACCESS, selection)
    observed = [event_time(o, event) for o in cohorts.cohort_outcomes(full_data, options) if o]
    full = kaplan_meier([o for o in observed if o is not None])
    return cohorts.kaplan_meier_of(lean_data, event, options), full


OPTIONS = [
    OutcomeOptions(),
    OutcomeOptions(clearance=ClearanceCriterion.PASI90),
    OutcomeOptions(clearance=ClearanceCriterion.IGA_0),
    OutcomeOptions(clearance=ClearanceCriterion.PASI_LE_2),
    OutcomeOptions(relapse=RelapseDefinition.EMA_50PCT_LOSS),
    OutcomeOptions(relapse=RelapseDefinition.LOSS_OF_PASI75),
    OutcomeOptions(relapse=RelapseDefinition.PASI_ABOVE, relapse_threshold_tenths=30),
]


@pytest.mark.parametrize("event", list(CohortEvent))
@pytest.mark.parametrize("agent", [None, AGENT])
def test_the_lean_read_gives_the_full_paths_estimate(
    client: TestClient, crafted: list[uuid.UUID], event: CohortEvent, agent: str | None
) -> None:
    for options in OPTIONS:
        for selection in (
            CohortSelection(treatment_agent=agent),
            CohortSelection(patient_ids=tuple(crafted[::3]), treatment_agent=agent),
        ):
            lean, full = _both(client, selection, event, options)
            assert lean == full, (event, options, selection)
            assert full.n > 0


def test_a_stored_score_the_outcomes_refuse_is_the_same_422(
    client: TestClient, crafted: list[uuid.UUID]
) -> None:
    db = _db(client)
    row = _rows(random.Random(1), crafted[20])[0] | {
        "pasi_tenths": 900,
        "is_baseline": False,
        "entered_in_error": False,
    }
    with db.transaction() as session:
        session.connection().execute(insert(table_of(Assessment)), [row])
    for event in CohortEvent:
        with db.read() as session:
            full_data = cohorts.load_cohort(session, DEV_ACCESS, CohortSelection())
            lean_data = cohorts.load_cohort_events(session, DEV_ACCESS, CohortSelection())
        with pytest.raises(InvalidParameter) as full:
            cohorts.cohort_outcomes(full_data, OutcomeOptions())
        with pytest.raises(InvalidParameter) as lean:
            cohorts.kaplan_meier_of(lean_data, event, OutcomeOptions())
        assert lean.value.errors == full.value.errors
        assert str(row["id"]) in lean.value.errors[0]["detail"]
    r = client.get("/v1/cohorts/time-to-event")
    assert r.status_code == 422, r.text
    assert str(row["id"]) in r.text
