"""GET /v1/cohorts/responses and /v1/cohorts/time-to-event end to end (SPEC section 8): cohorts
posted through HTTP, rates checked against hand-worked numbers, Kaplan–Meier against lifelines
on the per-patient figures the outcomes endpoint reports, filters, organizations and the audit.
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times

from tests.api.helpers import (
    MRN_SYSTEM,
    TRIAL_SYSTEM,
    error_locations,
    identifier,
    new_assessment,
    new_patient,
    new_treatment,
    problem,
)
from tests.api.test_organizations import as_key, new_tenant

DAY0 = date(2021, 1, 4)
TOLERANCE = 1e-9
Z_95 = 1.959963984540054  # the 0.975 normal quantile, as scipy (and so lifelines) has it
KM_METHOD = "Kaplan–Meier; 95 % CI from Greenwood's variance on the log(-log) scale"


def on(days: int) -> str:
    return (DAY0 + timedelta(days=days)).isoformat()


def course(client: TestClient, rows: list[tuple[int, float, str | None]], value: str) -> str:
    """A patient with assessments (day from DAY0, PASI, visit label); returns its id."""
    pid = str(new_patient(client, value)["id"])
    for day, pasi, visit in rows:
        extra: dict[str, Any] = {} if visit is None else {"visit": visit}
        new_assessment(client, pid, on(day), pasi_level=pasi, **extra)
    return pid


def responses(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/cohorts/responses", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def time_to_event(client: TestClient, params: Any = None) -> dict[str, Any]:
    r = client.get("/v1/cohorts/time-to-event", params=params)
    assert r.status_code == 200, r.text
    body = dict(r.json())
    assert body["method"] == KM_METHOD
    return body


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The textbook score interval (Wilson 1927), written independently of the service."""
    p = successes / n
    z2 = Z_95**2
    centre = p + z2 / (2 * n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - half) / (1 + z2 / n), (centre + half) / (1 + z2 / n)


# --------------------------------------------------------------------------- response rates

# Baseline PASI, then later visits (day, PASI, label). Percent improvement in brackets.
SMALL_COHORT: list[list[tuple[int, float, str | None]]] = [
    # P1: Week 12 80 % (PASI 75), Week 24 95 % (PASI 75 and 90).
    [(0, 20, "Baseline"), (84, 4, "Week 12"), (168, 1, "Week 24")],
    # P2: Week 12 50 % (neither); no Week 24, but an unlabelled day-150 visit at 95 %.
    [(0, 10, "Baseline"), (85, 5, "Week 12"), (150, 0.5, None)],
    # P3: Week 12 90 % (both), Week 24 70 % (neither).
    [(0, 30, "Baseline"), (83, 3, "Week 12"), (170, 9, "Week 24")],
    # P4: baseline only.
    [(0, 12, "Baseline")],
]

# visit -> (median day, {imputation: (n, PASI 75 responders, PASI 90 responders)}), worked by
# hand from SMALL_COHORT plus a fifth patient with no assessment:
#   observed: the patients assessed at the visit;
#   nri:      all 5 patients, not assessed = non-responder;
#   locf:     the 4 patients with an assessment; P4 carries its baseline forward (never a
#             responder), P2 at Week 24 (median day 169) carries day 150 (95 %: both).
EXPECTED_RATES = {
    "Baseline": (0.0, {"observed": (4, 0, 0), "nri": (5, 0, 0), "locf": (4, 0, 0)}),
    "Week 12": (84.0, {"observed": (3, 2, 1), "nri": (5, 2, 1), "locf": (4, 2, 1)}),
    "Week 24": (169.0, {"observed": (2, 1, 1), "nri": (5, 1, 1), "locf": (4, 2, 2)}),
}
ASSESSED = {"Baseline": 4, "Week 12": 3, "Week 24": 2}


@pytest.fixture
def small_cohort(client: TestClient) -> list[str]:
    ids = [course(client, rows, f"S-{n}") for n, rows in enumerate(SMALL_COHORT, 1)]
    ids.append(str(new_patient(client, "S-5")["id"]))  # never assessed
    return ids


@pytest.mark.parametrize("imputation", ["observed", "nri", "locf"])
def test_response_rates_equal_the_hand_worked_numbers_under_each_imputation(
    client: TestClient, small_cohort: list[str], imputation: str
) -> None:
    body = responses(client, targets="pasi75,pasi90", imputation=imputation)
    assert body["imputation"] == imputation
    assert body["targets"] == ["pasi75", "pasi90"]
    assert body["patients"] == 5
    assert [v["visit"] for v in body["visits"]] == ["Baseline", "Week 12", "Week 24"]
    for visit in body["visits"]:
        median_day, by_imputation = EXPECTED_RATES[visit["visit"]]
        n, pasi75, pasi90 = by_imputation[imputation]
        assert visit["median_day"] == median_day
        assert visit["n"] == n
        assert visit["assessed"] == ASSESSED[visit["visit"]]
        assert set(visit["rates"]) == {"pasi75", "pasi90"}
        for target, responders in (("pasi75", pasi75), ("pasi90", pasi90)):
            rate = visit["rates"][target]
            assert rate["responders"] == responders
            assert rate["proportion"] == pytest.approx(responders / n, abs=1e-15)
            lower, upper = wilson(responders, n)
            assert rate["ci_lower"] == pytest.approx(lower, abs=1e-12)
            assert rate["ci_upper"] == pytest.approx(upper, abs=1e-12)


def test_response_rates_follow_the_requested_targets_in_order(
    client: TestClient, small_cohort: list[str]
) -> None:
    body = responses(client, targets="pasi_le_5,pasi50,pasi_le_5", imputation="observed")
    assert body["targets"] == ["pasi_le_5", "pasi50"]
    week12 = next(v for v in body["visits"] if v["visit"] == "Week 12")
    assert list(week12["rates"]) == ["pasi_le_5", "pasi50"]
    # PASI 4, 5 and 3 are all <= 5; 80 %, 50 % and 90 % all reach PASI 50.
    assert week12["rates"]["pasi_le_5"]["responders"] == 3
    assert week12["rates"]["pasi50"]["responders"] == 3


# --------------------------------------------------------------------------- Kaplan–Meier


def random_courses(seed: int, patients: int) -> list[list[tuple[int, float, str | None]]]:
    """Courses with responses, clearances, relapses and ties (visits on a 28-day grid)."""
    rng = random.Random(seed)
    levels = [20.0, 16.0, 12.0, 9.0, 6.0, 4.0, 2.0, 1.0, 0.0]
    cohort = []
    for _ in range(patients):
        level = 0
        rows: list[tuple[int, float, str | None]] = [(0, levels[0], "Baseline")]
        for visit in range(1, rng.randint(2, 6)):
            level = max(0, min(len(levels) - 1, level + rng.choice([-3, -1, 1, 2, 3, 4])))
            day = 28 * visit + rng.choice([0, 0, 0, 7])
            rows.append((day, levels[level], f"Week {day // 7}"))
        cohort.append(rows)
    return cohort


def per_patient_observation(outcomes: dict[str, Any], event: str) -> tuple[int, bool] | None:
    """The per-patient figure of SPEC section 3, read from GET /v1/patients/{id}/outcomes."""
    if event == "clearance":
        c = outcomes["clearance"]
        if c["censored"] is None:
            return None
        return (c["days_observed"], False) if c["censored"] else (c["days_to_clearance"], True)
    if event == "relapse":
        r = outcomes["relapse"]
        if r["evaluable_from"] is None:
            return None
        return (r["relapse_free_days"], False) if r["censored"] else (r["days_to_relapse"], True)
    response = outcomes["responses"][event]
    if response["reached_now"] is None:
        return None
    if response["days"] is None:
        return outcomes["clearance"]["days_observed"], False
    return response["days"], True


def finite_or_none(value: float) -> int | None:
    return None if math.isinf(value) else int(value)


def assert_equals_lifelines(body: dict[str, Any], observations: list[tuple[int, bool]]) -> None:
    assert body["n"] == len(observations)
    assert body["events"] == sum(e for _d, e in observations)
    assert body["censored"] == len(observations) - body["events"]
    if not observations:
        assert body["steps"] == []
        assert body["median_days"] is None
        return
    fitter = KaplanMeierFitter().fit([d for d, _e in observations], [e for _d, e in observations])
    survival = fitter.survival_function_.iloc[:, 0]
    interval = fitter.confidence_interval_
    table = fitter.event_table
    assert [s["day"] for s in body["steps"]] == sorted({d for d, _e in observations})
    for step in body["steps"]:
        t = float(step["day"])
        assert step["at_risk"] == table.loc[t, "at_risk"]
        assert step["events"] == table.loc[t, "observed"]
        assert step["censored"] == table.loc[t, "censored"]
        assert step["survival"] == pytest.approx(survival.loc[t], abs=TOLERANCE, rel=0)
        assert step["ci_lower"] == pytest.approx(interval.loc[t].iloc[0], abs=TOLERANCE, rel=0)
        assert step["ci_upper"] == pytest.approx(interval.loc[t].iloc[1], abs=TOLERANCE, rel=0)
    # At an exact S == 0.5 the service decides the median exactly, lifelines in floating point
    # (documented in app.scoring.cohort); these cohorts are checked to have no such tie.
    assert all(abs(s["survival"] - 0.5) > TOLERANCE for s in body["steps"])
    assert body["median_days"] == finite_or_none(fitter.median_survival_time_)
    median_ci = median_survival_times(interval)
    assert body["median_ci"] == [
        finite_or_none(median_ci.iloc[0, 0]),
        finite_or_none(median_ci.iloc[0, 1]),
    ]


@pytest.mark.parametrize("seed", [7, 2024])
def test_kaplan_meier_through_the_api_equals_lifelines_on_the_per_patient_figures(
    client: TestClient, seed: int
) -> None:
    ids = [course(client, rows, f"KM-{n}") for n, rows in enumerate(random_courses(seed, 24))]
    outcomes = {}
    for pid in ids:
        r = client.get(f"/v1/patients/{pid}/outcomes")
        assert r.status_code == 200, r.text
        outcomes[pid] = r.json()
    for event in ("clearance", "relapse", "pasi50", "pasi75", "pasi90"):
        observations = [
            o for pid in ids if (o := per_patient_observation(outcomes[pid], event)) is not None
        ]
        body = time_to_event(client, {"event": event})
        assert body["event"] == event
        assert_equals_lifelines(body, observations)
    # The clearance and relapse options are those of the per-patient outcomes.
    params = {"event": "clearance", "clearance": "pasi_le_2"}
    by_option = [
        o
        for pid in ids
        if (
            o := per_patient_observation(
                client.get(f"/v1/patients/{pid}/outcomes", params=params).json(), "clearance"
            )
        )
        is not None
    ]
    assert_equals_lifelines(time_to_event(client, params), by_option)
    params = {"event": "relapse", "relapse": "pasi_above", "relapse_threshold": 8}
    by_option = [
        o
        for pid in ids
        if (
            o := per_patient_observation(
                client.get(f"/v1/patients/{pid}/outcomes", params=params).json(), "relapse"
            )
        )
        is not None
    ]
    assert_equals_lifelines(time_to_event(client, params), by_option)


def test_an_empty_cohort_answers_n_0(client: TestClient) -> None:
    body = time_to_event(client)
    assert body == {
        "event": "clearance",
        "n": 0,
        "events": 0,
        "censored": 0,
        "median_days": None,
        "median_ci": [None, None],
        "steps": [],
        "method": KM_METHOD,
    }
    rates = responses(client)
    assert (rates["patients"], rates["visits"], rates["imputation"]) == (0, [], "nri")
    # Patients without assessments are in the cohort but enter no estimate.
    new_patient(client, "never-assessed")
    assert time_to_event(client)["n"] == 0
    assert responses(client)["patients"] == 1


# --------------------------------------------------------------------------- filters


def test_identifier_system_keeps_the_patients_with_an_identifier_in_it(client: TestClient) -> None:
    course(client, [(0, 10, "Baseline"), (28, 0, "Week 4")], "T-1")
    mrn_only = new_patient(client, "M-1", system=MRN_SYSTEM)["id"]
    new_assessment(client, mrn_only, on(0), pasi_level=10)
    both = client.post(
        "/v1/patients",
        json={"identifiers": [identifier("M-2", MRN_SYSTEM), identifier("T-2", TRIAL_SYSTEM)]},
    ).json()["id"]
    new_assessment(client, both, on(0), pasi_level=10)
    new_assessment(client, both, on(56), pasi_level=5)

    body = time_to_event(client, {"identifier_system": TRIAL_SYSTEM})
    assert (body["n"], body["events"]) == (2, 1)
    assert [(s["day"], s["events"], s["censored"]) for s in body["steps"]] == [
        (28, 1, 0),
        (56, 0, 1),
    ]
    assert responses(client, identifier_system=TRIAL_SYSTEM)["patients"] == 2
    assert time_to_event(client, {"identifier_system": MRN_SYSTEM})["n"] == 2
    assert time_to_event(client, {"identifier_system": "urn:nobody"})["n"] == 0


def test_patient_id_is_repeatable_and_leaves_unknown_ids_out(client: TestClient) -> None:
    a = course(client, [(0, 10, "Baseline"), (28, 0, "Week 4")], "P-a")
    b = course(client, [(0, 10, "Baseline"), (56, 0, "Week 8")], "P-b")
    course(client, [(0, 10, "Baseline"), (84, 0, "Week 12")], "P-c")
    params = [("patient_id", a), ("patient_id", b), ("patient_id", str(uuid.uuid4()))]
    body = time_to_event(client, params)
    assert [(s["day"], s["events"]) for s in body["steps"]] == [(28, 1), (56, 1)]
    assert time_to_event(client, [("patient_id", a), ("identifier_system", MRN_SYSTEM)])["n"] == 0
    assert time_to_event(client)["n"] == 3
    too_many = [("patient_id", str(uuid.uuid4())) for _ in range(101)]
    body = problem(client.get("/v1/cohorts/time-to-event", params=too_many), 422)
    assert error_locations(body) == {"patient_id"}


def test_treatment_agent_counts_time_from_the_earliest_course_of_that_agent(
    client: TestClient,
) -> None:
    # A: baseline day 28 (latest on or before the day-30 start), cleared day 60: 30 days.
    a = course(client, [(0, 20, "Screening"), (28, 18, "Day 0"), (60, 0, "Week 4")], "A")
    msc_a = new_treatment(client, a, on(30), agent="UC-MSC infusion")
    # B: another agent only.
    b = course(client, [(0, 20, "Baseline"), (14, 0, "Week 2")], "B")
    new_treatment(client, b, on(1), agent="methotrexate")
    # C: two courses of the agent (spelt differently): the earliest (day 10) anchors; not
    # cleared, censored at its latest assessment (day 150 -> 140 days from the start).
    c = course(client, [(5, 20, "Baseline"), (90, 6, "Week 12"), (150, 2, "Week 20")], "C")
    new_treatment(client, c, on(100), agent="UC-MSC infusion")
    msc_c = new_treatment(client, c, on(10), agent="  uc-msc INFUSION ")
    new_treatment(client, c, on(2), agent="methotrexate")
    # D: the agent, but no assessment on or before its start: in the cohort, in no estimate.
    d = course(client, [(40, 20, "Baseline"), (70, 0, "Week 4")], "D")
    new_treatment(client, d, on(35), agent="UC-MSC infusion")

    body = time_to_event(client, {"treatment_agent": "UC-MSC infusion"})
    assert (body["n"], body["events"], body["censored"]) == (2, 1, 1)
    assert [(s["day"], s["events"], s["censored"]) for s in body["steps"]] == [
        (30, 1, 0),
        (140, 0, 1),
    ]
    # The same figures as each patient's outcomes anchored on that course.
    for pid, treatment in ((a, msc_a), (c, msc_c)):
        r = client.get(f"/v1/patients/{pid}/outcomes", params={"treatment": treatment["id"]})
        clearance = r.json()["clearance"]
        figure = clearance["days_to_clearance"] or clearance["days_observed"]
        assert figure in {s["day"] for s in body["steps"]}

    rates = responses(client, treatment_agent="uc-msc infusion", imputation="nri")
    assert rates["patients"] == 3  # A, C and D (D counts as a non-responder under NRI)
    week4 = next(v for v in rates["visits"] if v["visit"] == "Week 4")
    assert (week4["n"], week4["assessed"], week4["rates"]["pasi75"]["responders"]) == (3, 1, 1)
    # B's course (day 1) follows its day-0 baseline; C's (day 2) precedes every assessment.
    methotrexate = time_to_event(client, {"treatment_agent": "methotrexate"})
    assert [(s["day"], s["events"]) for s in methotrexate["steps"]] == [(13, 1)]
    assert time_to_event(client, {"treatment_agent": "placebo"})["n"] == 0


# --------------------------------------------------------------------------- organizations


def test_another_organizations_patients_are_never_included(client: TestClient) -> None:
    a, b = new_tenant(client, "clinic-a"), new_tenant(client, "study-b")
    as_a, as_b = as_key(client, a.token), as_key(client, b.token)
    a_ids = [course(as_a, [(0, 10, "Baseline"), (28, 0, "Week 4")], f"A-{n}") for n in range(3)]

    for key in (as_b, as_key(client, new_tenant(client, "empty-c").token)):
        assert time_to_event(key)["n"] == 0
        assert responses(key)["patients"] == 0
        # Naming A's patients explicitly does not reach them either.
        assert time_to_event(key, [("patient_id", pid) for pid in a_ids])["n"] == 0
        assert time_to_event(key, {"identifier_system": TRIAL_SYSTEM})["n"] == 0

    b_id = course(as_b, [(0, 10, "Baseline"), (56, 0, "Week 8")], "B-1")
    assert [(s["day"], s["events"]) for s in time_to_event(as_a)["steps"]] == [(28, 3)]
    assert time_to_event(as_a, [("patient_id", b_id)])["n"] == 0
    assert [(s["day"], s["events"]) for s in time_to_event(as_b)["steps"]] == [(56, 1)]
    assert time_to_event(client)["n"] == 4  # the admin key spans every organization


# --------------------------------------------------------------------------- audit


def test_the_audit_event_of_a_cohort_read_lists_every_included_patient(
    client: TestClient,
) -> None:
    ids = {course(client, [(0, 10, "Baseline"), (28, 4, "Week 4")], f"C-{n}") for n in range(4)}
    ids.add(str(new_patient(client, "no-assessments")["id"]))
    other = new_tenant(client, "other")
    outside = course(as_key(client, other.token), [(0, 10, "Baseline")], "X-1")

    for url, action in (
        ("/v1/cohorts/responses", "read-cohort-responses"),
        ("/v1/cohorts/time-to-event", "read-cohort-time-to-event"),
        ("/v1/cohorts/time-to-event.svg", "read-cohort-chart"),
    ):
        r = client.get(url, params={"identifier_system": TRIAL_SYSTEM})
        assert r.status_code == 200, r.text
        events = client.get("/v1/audit-events", params={"action": action, "limit": 200}).json()
        event = events["items"][-1]
        assert (event["status"], event["route"]) == (200, url)
        assert set(event["patient_ids"]) == ids | {outside}  # the admin key: every patient

        as_other = as_key(client, other.token)
        assert as_other.get(url).status_code == 200
        events = client.get("/v1/audit-events", params={"action": action, "limit": 200}).json()
        assert events["items"][-1]["patient_ids"] == [outside]
        assert events["items"][-1]["organization_id"] == other.id

    # "Who saw patient X" finds the cohort reads.
    some = sorted(ids)[0]
    seen = client.get("/v1/audit-events", params={"patient_id": some, "limit": 200}).json()
    actions = {e["action"] for e in seen["items"]}
    assert {"read-cohort-responses", "read-cohort-time-to-event", "read-cohort-chart"} <= actions


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("url", "params", "parameter"),
    [
        ("/v1/cohorts/responses", {"targets": "pasi75,pasi65"}, "targets"),
        ("/v1/cohorts/responses", {"targets": " , "}, "targets"),
        ("/v1/cohorts/responses", {"imputation": "worst-case"}, "imputation"),
        ("/v1/cohorts/time-to-event", {"event": "death"}, "event"),
        ("/v1/cohorts/time-to-event", {"clearance": "pasi80"}, "clearance"),
        ("/v1/cohorts/time-to-event", {"relapse": "pasi_above"}, "relapse_threshold"),
        ("/v1/cohorts/time-to-event", {"relapse_threshold": "7.25"}, "relapse_threshold"),
        ("/v1/cohorts/time-to-event", {"patient_id": "not-a-uuid"}, "patient_id"),
        ("/v1/cohorts/time-to-event.svg", {"event": "death"}, "event"),
    ],
)
def test_unknown_targets_events_and_options_are_422_naming_the_parameter(
    client: TestClient, url: str, params: dict[str, str], parameter: str
) -> None:
    body = problem(client.get(url, params=params), 422)
    assert parameter in error_locations(body), body
