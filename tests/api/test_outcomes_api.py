"""GET /v1/patients/{id}/outcomes end to end: timelines posted through HTTP (SPEC sections 3, 4).

PASI values are written in integer tenths (186 means 18.6) and turned into region inputs by
`_pasi_regions`, so every timeline states exactly the PASI the server must compute.
"""

from __future__ import annotations

import uuid
from datetime import date
from functools import cache
from typing import Any

import pytest
from fastapi.testclient import TestClient

PROBLEM_JSON = "application/problem+json"
REGIONS = (("lower_limbs", 4), ("trunk", 3), ("upper_limbs", 2), ("head_neck", 1))
# Products severity_sum (0-12) x area_score (0-6) a region can give.
_PRODUCTS = sorted({s * a for s in range(13) for a in range(7)}, reverse=True)


# --------------------------------------------------------------------------- builders


@cache
def _solve(region_index: int, remaining: int) -> tuple[int, ...] | None:
    """Products per region (from `region_index` on) whose weighted sum is `remaining`."""
    if region_index == len(REGIONS):
        return () if remaining == 0 else None
    weight = REGIONS[region_index][1]
    for product in _PRODUCTS:
        if weight * product <= remaining:
            rest = _solve(region_index + 1, remaining - weight * product)
            if rest is not None:
                return (product, *rest)
    return None


def _region(product: int) -> dict[str, int]:
    if product == 0:
        return {"erythema": 0, "induration": 0, "desquamation": 0, "area_score": 0}
    area = next(a for a in range(1, 7) if product % a == 0 and product // a <= 12)
    severity = product // area
    erythema = min(4, severity)
    induration = min(4, severity - erythema)
    return {
        "erythema": erythema,
        "induration": induration,
        "desquamation": severity - erythema - induration,
        "area_score": area,
    }


def _pasi_regions(tenths: int) -> dict[str, dict[str, int]]:
    """Region inputs (area scores) whose PASI is exactly `tenths` / 10."""
    products = _solve(0, tenths)
    assert products is not None, f"no region inputs give PASI {tenths / 10}"
    return {name: _region(p) for (name, _w), p in zip(REGIONS, products, strict=True)}


def _new_patient(client: TestClient) -> str:
    r = client.post(
        "/v1/patients",
        json={"identifiers": [{"system": "https://trial.example/subject", "value": _uid()}]},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _uid() -> str:
    return uuid.uuid4().hex


def _record(
    client: TestClient, patient_id: str, on: str, pasi_tenths: int, **extra: Any
) -> dict[str, Any]:
    body = {"assessed_on": on, "pasi": _pasi_regions(pasi_tenths), **extra}
    r = client.post(f"/v1/patients/{patient_id}/assessments", json=body)
    assert r.status_code == 201, r.text
    stored: dict[str, Any] = r.json()
    assert stored["scores"]["pasi"] == pasi_tenths / 10  # the builder gave the intended PASI
    return stored


def _timeline(
    client: TestClient, points: list[tuple[str, int]], **extra: Any
) -> tuple[str, list[str]]:
    patient_id = _new_patient(client)
    ids = [str(_record(client, patient_id, on, tenths, **extra)["id"]) for on, tenths in points]
    return patient_id, ids


def _outcomes(client: TestClient, patient_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/patients/{patient_id}/outcomes", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _problem(client: TestClient, patient_id: str, status: int, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/patients/{patient_id}/outcomes", params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


def _days(start: str, end: str) -> int:
    return (date.fromisoformat(end) - date.fromisoformat(start)).days


def _treatment(client: TestClient, patient_id: str, started: str, ended: str | None) -> str:
    r = client.post(
        f"/v1/patients/{patient_id}/treatments",
        json={"agent": "UC-MSC infusion", "started_on": started, "ended_on": ended},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# --------------------------------------------------------------------------- SPEC section 4


SPEC_TIMELINE = [
    ("2019-03-04", 186, 22.0),  # baseline PASI 18.6
    ("2019-05-27", 80, 10.0),  # 57.0 %: PASI 50
    ("2019-07-22", 36, 4.0),  # 80.6 %: PASI 75
    ("2019-10-14", 0, 0.0),  # PASI 90 and 100
    ("2020-06-01", 0, 0.0),
    ("2021-02-01", 0, 0.0),
]


def test_spec_section_4_example_is_reproduced_end_to_end(client: TestClient) -> None:
    patient_id = _new_patient(client)
    ids = [
        str(_record(client, patient_id, on, tenths, bsa_percent=bsa)["id"])
        for on, tenths, bsa in SPEC_TIMELINE
    ]

    out = _outcomes(client, patient_id)

    assert out["anchor"] == "baseline"
    assert out["anchor_on"] == "2019-03-04"
    assert out["baseline"] == {
        "assessment_id": ids[0],
        "assessed_on": "2019-03-04",
        "pasi": 18.6,
        "bsa_percent": 22.0,
    }
    assert out["latest"] == {
        "assessment_id": ids[-1],
        "assessed_on": "2021-02-01",
        "pasi": 0.0,
        "bsa_percent": 0.0,
    }
    assert out["change"]["pasi_absolute"] == -18.6
    assert out["change"]["percent_improvement"] == 100.0
    assert out["change"]["bsa_absolute"] == -22.0
    responses = out["responses"]
    assert responses["pasi50"] == {
        "reached_now": True,
        "first_reached_on": "2019-05-27",
        "days": 84,
        "note": None,
    }
    assert responses["pasi75"]["first_reached_on"] == "2019-07-22"
    assert responses["pasi75"]["days"] == 140
    for key in ("pasi90", "pasi100", "pasi_le_1", "pasi_le_2", "pasi_le_3"):
        assert responses[key]["reached_now"] is True, key
        assert responses[key]["first_reached_on"] == "2019-10-14", key
        assert responses[key]["days"] == 224, key
    assert responses["pasi_le_5"]["first_reached_on"] == "2019-07-22"
    assert responses["pasi_le_5"]["days"] == 140
    assert set(responses) == {
        "pasi50",
        "pasi75",
        "pasi90",
        "pasi100",
        "pasi_le_1",
        "pasi_le_2",
        "pasi_le_3",
        "pasi_le_5",
    }
    clearance = out["clearance"]
    assert clearance["criterion"] == "pasi100"
    assert clearance["cleared_on"] == "2019-10-14"
    assert clearance["days_to_clearance"] == 224
    assert clearance["censored"] is False
    assert clearance["days_observed"] == 700
    assert clearance["lasted_days"] == 476
    assert clearance["ongoing"] is True
    relapse = out["relapse"]
    assert relapse["definition"] == "npf_50pct_loss"
    assert relapse["evaluable_from"] == "2019-05-27"
    assert relapse["relapsed_on"] is None
    assert relapse["days_to_relapse"] is None
    assert relapse["relapse_free_days"] == 616
    assert relapse["censored"] is True
    assert out["episodes"] == [
        {
            "responded_on": "2019-05-27",
            "best_pasi": 0.0,
            "best_on": "2019-10-14",
            "cleared_on": "2019-10-14",
            "relapsed_on": None,
        }
    ]
    series = out["series"]
    assert [p["assessment_id"] for p in series] == ids
    assert series[0]["assessed_on"] == "2019-03-04"
    assert series[0]["days"] == 0
    assert series[0]["pasi"] == 18.6
    assert series[0]["percent_improvement"] == 0.0
    assert [p["days"] for p in series] == [0, 84, 140, 224, 455, 700]
    assert [p["percent_improvement"] for p in series] == [0.0, 57.0, 80.6, 100.0, 100.0, 100.0]
    assert [p["bsa_percent"] for p in series] == [22.0, 10.0, 4.0, 0.0, 0.0, 0.0]
    assert all(p["counts"] for p in series)
    assert out["rebound"] is None


def test_percent_improvement_and_response_thresholds_are_exact(client: TestClient) -> None:
    # 2.8 -> 0.7 is exactly 75 % (binary floats give 74.99999999999999 %).
    patient_id, _ = _timeline(client, [("2020-01-06", 28), ("2020-02-03", 7)])
    out = _outcomes(client, patient_id)
    assert out["change"]["percent_improvement"] == 75.0
    assert out["responses"]["pasi75"]["reached_now"] is True
    assert out["responses"]["pasi75"]["first_reached_on"] == "2020-02-03"
    assert out["responses"]["pasi90"]["reached_now"] is False
    assert out["responses"]["pasi90"]["first_reached_on"] is None
    assert out["responses"]["pasi90"]["days"] is None


def test_absolute_target_is_met_at_exactly_its_limit(client: TestClient) -> None:
    # 12.0 -> 3.0: exactly PASI 75 and exactly PASI <= 3; 3.1 would miss both.
    patient_id, _ = _timeline(client, [("2020-01-06", 120), ("2020-02-03", 31), ("2020-03-02", 30)])
    out = _outcomes(client, patient_id)
    assert out["responses"]["pasi_le_3"]["first_reached_on"] == "2020-03-02"
    assert out["responses"]["pasi_le_3"]["days"] == 56
    assert out["responses"]["pasi75"]["first_reached_on"] == "2020-03-02"
    assert out["responses"]["pasi_le_5"]["first_reached_on"] == "2020-02-03"
    assert out["responses"]["pasi_le_2"]["reached_now"] is False
    assert out["series"][1]["percent_improvement"] == 74.2


def test_worsening_gives_negative_improvement_and_loses_reached_now(client: TestClient) -> None:
    patient_id, _ = _timeline(
        client, [("2020-01-06", 100), ("2020-02-03", 40), ("2020-03-02", 150)]
    )
    out = _outcomes(client, patient_id)
    assert out["change"]["pasi_absolute"] == 5.0
    assert out["change"]["percent_improvement"] == -50.0
    assert out["responses"]["pasi50"]["reached_now"] is False
    assert out["responses"]["pasi50"]["first_reached_on"] == "2020-02-03"
    assert out["responses"]["pasi50"]["days"] == 28


def test_a_baseline_that_already_meets_a_target_reaches_it_on_day_0(client: TestClient) -> None:
    patient_id, _ = _timeline(client, [("2020-01-06", 40), ("2020-02-03", 60)])
    out = _outcomes(client, patient_id)
    assert out["responses"]["pasi_le_5"]["first_reached_on"] == "2020-01-06"
    assert out["responses"]["pasi_le_5"]["days"] == 0
    assert out["responses"]["pasi_le_5"]["reached_now"] is False


# --------------------------------------------------------------------------- clearance


CLEARANCE_DATES = [
    "2020-01-06",
    "2020-02-03",
    "2020-03-02",
    "2020-04-06",
    "2020-05-04",
    "2020-06-01",
]
CLEARANCE_POINTS = [  # (PASI tenths, IGA)
    (200, 4),
    (30, 2),
    (20, 1),  # exactly PASI 90 (90.0 %), PASI <= 2
    (10, 0),  # PASI <= 1, IGA 0
    (0, None),  # PASI 100; no IGA neither meets nor breaks iga_0
    (15, 1),  # breaks pasi100, pasi_le_1 and iga_0; still PASI 90 and <= 2
]


@pytest.fixture
def clearance_patient(client: TestClient) -> str:
    patient_id = _new_patient(client)
    for on, (tenths, iga) in zip(CLEARANCE_DATES, CLEARANCE_POINTS, strict=True):
        _record(client, patient_id, on, tenths, **({} if iga is None else {"iga": iga}))
    return patient_id


@pytest.mark.parametrize(
    ("criterion", "cleared_index", "ended_index", "ongoing"),
    [
        ("pasi100", 4, 5, False),
        ("pasi90", 2, 5, True),
        ("pasi_le_2", 2, 5, True),
        ("pasi_le_1", 3, 5, False),
        ("iga_0", 3, 5, False),
    ],
)
def test_clearance_follows_the_chosen_criterion(
    client: TestClient,
    clearance_patient: str,
    criterion: str,
    cleared_index: int,
    ended_index: int,
    ongoing: bool,
) -> None:
    out = _outcomes(client, clearance_patient, clearance=criterion)
    clearance = out["clearance"]
    cleared_on = CLEARANCE_DATES[cleared_index]
    assert clearance["criterion"] == criterion
    assert clearance["cleared_on"] == cleared_on
    assert clearance["days_to_clearance"] == _days(CLEARANCE_DATES[0], cleared_on)
    assert clearance["censored"] is False
    assert clearance["days_observed"] == _days(CLEARANCE_DATES[0], CLEARANCE_DATES[-1])
    assert clearance["lasted_days"] == _days(cleared_on, CLEARANCE_DATES[ended_index])
    assert clearance["ongoing"] is ongoing


def test_clearance_defaults_to_pasi100(client: TestClient, clearance_patient: str) -> None:
    assert _outcomes(client, clearance_patient)["clearance"]["criterion"] == "pasi100"
    assert _outcomes(client, clearance_patient)["clearance"]["cleared_on"] == CLEARANCE_DATES[4]


def test_not_yet_cleared_is_censored_with_the_follow_up_so_far(client: TestClient) -> None:
    patient_id, _ = _timeline(client, [("2020-01-06", 200), ("2020-03-02", 30), ("2020-05-04", 21)])
    for criterion in ("pasi100", "pasi90", "pasi_le_1", "pasi_le_2"):
        clearance = _outcomes(client, patient_id, clearance=criterion)["clearance"]
        assert clearance["cleared_on"] is None, criterion
        assert clearance["days_to_clearance"] is None, criterion
        assert clearance["censored"] is True, criterion
        assert clearance["days_observed"] == 119, criterion
        assert clearance["lasted_days"] is None, criterion
        assert clearance["ongoing"] is None, criterion


def test_iga_clearance_without_any_iga_is_censored_with_a_note(client: TestClient) -> None:
    patient_id, _ = _timeline(client, [("2020-01-06", 200), ("2020-03-02", 0)])
    clearance = _outcomes(client, patient_id, clearance="iga_0")["clearance"]
    assert clearance["cleared_on"] is None
    assert clearance["censored"] is True
    assert clearance["note"]


# --------------------------------------------------------------------------- relapse


RELAPSE_TIMELINE = [
    ("2020-01-06", 200),  # baseline 20.0
    ("2020-02-03", 80),  # 60 %: PASI 50, evaluable from here
    ("2020-03-02", 40),  # 80 %: PASI 75; best 4.0
    ("2020-04-06", 120),  # exactly best + 0.5 x (baseline - best)
    ("2020-05-04", 121),  # just above it
    ("2020-06-01", 90),  # PASI 50 again
]


@pytest.mark.parametrize(
    ("params", "evaluable_from", "relapsed_on", "threshold", "episodes"),
    [
        # NPF: PASI >= best + half the improvement (2x >= best + baseline): 12.0 relapses.
        ({}, "2020-02-03", "2020-04-06", None, 2),
        ({"relapse": "npf_50pct_loss"}, "2020-02-03", "2020-04-06", None, 2),
        # EMA: strictly more than half lost: 12.0 does not, 12.1 does.
        ({"relapse": "ema_50pct_loss"}, "2020-02-03", "2020-05-04", None, 2),
        # Loss of PASI 75: evaluable from the first PASI 75, relapse at the first below it.
        ({"relapse": "loss_of_pasi75"}, "2020-03-02", "2020-04-06", None, 1),
        # Absolute threshold N: relapse at the first PASI > N after a PASI 50.
        (
            {"relapse": "pasi_above", "relapse_threshold": 12},
            "2020-02-03",
            "2020-05-04",
            12.0,
            2,
        ),
        (
            {"relapse": "pasi_above", "relapse_threshold": 11.9},
            "2020-02-03",
            "2020-04-06",
            11.9,
            2,
        ),
    ],
)
def test_relapse_follows_the_chosen_definition(
    client: TestClient,
    params: dict[str, Any],
    evaluable_from: str,
    relapsed_on: str,
    threshold: float | None,
    episodes: int,
) -> None:
    patient_id, _ = _timeline(client, RELAPSE_TIMELINE)
    out = _outcomes(client, patient_id, **params)
    relapse = out["relapse"]
    assert relapse["definition"] == params.get("relapse", "npf_50pct_loss")
    assert relapse["threshold"] == threshold
    assert relapse["evaluable_from"] == evaluable_from
    assert relapse["relapsed_on"] == relapsed_on
    assert relapse["days_to_relapse"] == _days(evaluable_from, relapsed_on)
    assert relapse["relapse_free_days"] == relapse["days_to_relapse"]
    assert relapse["censored"] is False
    assert len(out["episodes"]) == episodes
    first = out["episodes"][0]
    assert first["responded_on"] == evaluable_from
    assert first["relapsed_on"] == relapsed_on
    assert first["best_pasi"] == 4.0
    assert first["best_on"] == "2020-03-02"


def test_a_later_response_after_a_relapse_starts_a_new_episode(client: TestClient) -> None:
    patient_id, _ = _timeline(client, RELAPSE_TIMELINE)
    episodes = _outcomes(client, patient_id)["episodes"]
    assert episodes[1] == {
        "responded_on": "2020-06-01",
        "best_pasi": 9.0,
        "best_on": "2020-06-01",
        "cleared_on": None,
        "relapsed_on": None,
    }


def test_without_a_relapse_the_follow_up_is_censored(client: TestClient) -> None:
    patient_id, _ = _timeline(client, RELAPSE_TIMELINE)
    relapse = _outcomes(client, patient_id, relapse="pasi_above", relapse_threshold=12.1)["relapse"]
    assert relapse["evaluable_from"] == "2020-02-03"
    assert relapse["relapsed_on"] is None
    assert relapse["days_to_relapse"] is None
    assert relapse["relapse_free_days"] == _days("2020-02-03", "2020-06-01")
    assert relapse["censored"] is True


def test_relapse_is_not_evaluable_before_a_qualifying_response(client: TestClient) -> None:
    patient_id, _ = _timeline(client, [("2020-01-06", 200), ("2020-02-03", 101)])
    for params in ({}, {"relapse": "loss_of_pasi75"}):
        relapse = _outcomes(client, patient_id, **params)["relapse"]
        assert relapse["evaluable_from"] is None
        assert relapse["relapsed_on"] is None
        assert relapse["days_to_relapse"] is None
        assert relapse["relapse_free_days"] is None
        assert relapse["censored"] is None
        assert relapse["note"]
    assert _outcomes(client, patient_id)["episodes"] == []


def test_pasi_above_without_a_threshold_is_422(client: TestClient) -> None:
    patient_id, _ = _timeline(client, RELAPSE_TIMELINE)
    problem = _problem(client, patient_id, 422, relapse="pasi_above")
    assert any(e.get("parameter") == "relapse_threshold" for e in problem["errors"]), problem


@pytest.mark.parametrize("threshold", ["12.05", "-1", "72.1", "high"])
def test_a_relapse_threshold_that_is_not_a_pasi_value_is_422(
    client: TestClient, threshold: str
) -> None:
    patient_id, _ = _timeline(client, RELAPSE_TIMELINE)
    problem = _problem(client, patient_id, 422, relapse="pasi_above", relapse_threshold=threshold)
    assert any(e.get("parameter") == "relapse_threshold" for e in problem["errors"]), problem


# --------------------------------------------------------------------------- treatment anchor


ANCHOR_TIMELINE = [
    ("2019-03-04", 186),
    ("2019-03-25", 200),  # latest on or before the treatment start: the anchored baseline
    ("2019-05-27", 80),  # 60 % of 20.0
    ("2019-07-22", 36),  # 82 % of 20.0
]


def test_a_treatment_anchors_baseline_and_days(client: TestClient) -> None:
    patient_id, ids = _timeline(client, ANCHOR_TIMELINE)
    treatment_id = _treatment(client, patient_id, "2019-04-01", None)

    out = _outcomes(client, patient_id, treatment=treatment_id)

    assert out["anchor"] == "treatment"
    assert out["anchor_on"] == "2019-04-01"
    assert out["treatment_id"] == treatment_id
    assert out["baseline"]["assessment_id"] == ids[1]
    assert out["baseline"]["pasi"] == 20.0
    assert [p["days"] for p in out["series"]] == [-28, -7, 56, 112]
    assert [p["counts"] for p in out["series"]] == [False, True, True, True]
    assert out["series"][0]["percent_improvement"] is None
    assert out["responses"]["pasi50"]["first_reached_on"] == "2019-05-27"
    assert out["responses"]["pasi50"]["days"] == 56
    assert out["responses"]["pasi75"]["days"] == 112
    assert out["change"]["percent_improvement"] == 82.0
    assert out["notes"]


def test_without_the_treatment_option_the_earliest_assessment_is_baseline(
    client: TestClient,
) -> None:
    patient_id, ids = _timeline(client, ANCHOR_TIMELINE)
    _treatment(client, patient_id, "2019-04-01", None)
    out = _outcomes(client, patient_id)
    assert out["anchor"] == "baseline"
    assert out["treatment_id"] is None
    assert out["baseline"]["assessment_id"] == ids[0]
    assert out["responses"]["pasi50"]["days"] == 84


def test_an_unknown_treatment_is_404(client: TestClient) -> None:
    patient_id, _ = _timeline(client, ANCHOR_TIMELINE)
    _problem(client, patient_id, 404, treatment=str(uuid.uuid4()))


def test_another_patients_treatment_is_404(client: TestClient) -> None:
    patient_id, _ = _timeline(client, ANCHOR_TIMELINE)
    other_id, _ = _timeline(client, ANCHOR_TIMELINE)
    foreign = _treatment(client, other_id, "2019-04-01", None)
    _problem(client, patient_id, 404, treatment=foreign)


def test_a_treatment_entered_in_error_cannot_anchor(client: TestClient) -> None:
    patient_id, _ = _timeline(client, ANCHOR_TIMELINE)
    treatment_id = _treatment(client, patient_id, "2019-04-01", None)
    r = client.delete(f"/v1/treatments/{treatment_id}", params={"reason": "wrong patient"})
    assert r.status_code == 200, r.text
    _problem(client, patient_id, 404, treatment=treatment_id)


def test_a_treatment_with_no_assessment_on_or_before_its_start_is_422(client: TestClient) -> None:
    patient_id, _ = _timeline(client, ANCHOR_TIMELINE)
    treatment_id = _treatment(client, patient_id, "2019-03-03", None)
    problem = _problem(client, patient_id, 422, treatment=treatment_id)
    assert any(e.get("parameter") == "treatment" for e in problem["errors"]), problem


def test_an_assessment_on_the_treatment_start_date_is_its_baseline(client: TestClient) -> None:
    patient_id, ids = _timeline(client, ANCHOR_TIMELINE)
    treatment_id = _treatment(client, patient_id, "2019-03-04", None)
    out = _outcomes(client, patient_id, treatment=treatment_id)
    assert out["baseline"]["assessment_id"] == ids[0]
    assert out["series"][0]["days"] == 0


# --------------------------------------------------------------------------- rebound


REBOUND_TIMELINE = [
    ("2019-03-04", 186),  # baseline 18.6: 125 % is 23.25
    ("2019-05-27", 80),
    ("2019-07-01", 232),  # 30 days after the end: 124.7 %, not a rebound
    ("2019-08-19", 233),  # 79 days after the end: 125.3 %, a rebound within 90 days only
]


@pytest.mark.parametrize("anchored", [False, True])
def test_rebound_within_90_days_of_the_treatment_end(client: TestClient, anchored: bool) -> None:
    patient_id, _ = _timeline(client, REBOUND_TIMELINE)
    treatment_id = _treatment(client, patient_id, "2019-03-04", "2019-06-01")
    params = {"treatment": treatment_id} if anchored else {}
    rebound = _outcomes(client, patient_id, **params)["rebound"]
    assert rebound["treatment_id"] == treatment_id
    assert rebound["treatment_ended_on"] == "2019-06-01"
    assert rebound["window_days"] == 90
    assert rebound["rebounded"] is True
    assert rebound["rebound_on"] == "2019-08-19"
    assert rebound["days_after_end"] == 79


def test_rebound_window_days_60_gives_the_ema_window(client: TestClient) -> None:
    patient_id, _ = _timeline(client, REBOUND_TIMELINE)
    treatment_id = _treatment(client, patient_id, "2019-03-04", "2019-06-01")
    rebound = _outcomes(client, patient_id, rebound_window_days=60)["rebound"]
    assert rebound["treatment_id"] == treatment_id
    assert rebound["window_days"] == 60
    assert rebound["rebounded"] is False
    assert rebound["rebound_on"] is None
    assert rebound["days_after_end"] is None


def test_no_rebound_is_reported_while_no_treatment_has_ended(client: TestClient) -> None:
    patient_id, _ = _timeline(client, REBOUND_TIMELINE)
    _treatment(client, patient_id, "2019-03-04", None)
    assert _outcomes(client, patient_id)["rebound"] is None


@pytest.mark.parametrize("window", ["0", "3651", "ninety"])
def test_an_invalid_rebound_window_is_422(client: TestClient, window: str) -> None:
    patient_id, _ = _timeline(client, REBOUND_TIMELINE)
    problem = _problem(client, patient_id, 422, rebound_window_days=window)
    assert any(e.get("parameter") == "rebound_window_days" for e in problem["errors"]), problem


# --------------------------------------------------------------------------- records change


def test_amending_an_assessment_changes_the_outcomes(client: TestClient) -> None:
    patient_id, ids = _timeline(client, [("2020-01-06", 186), ("2020-02-03", 80)])
    assert _outcomes(client, patient_id)["responses"]["pasi50"]["reached_now"] is True

    current = client.get(f"/v1/assessments/{ids[1]}")
    assert current.status_code == 200, current.text
    r = client.put(
        f"/v1/assessments/{ids[1]}",
        json={
            "assessed_on": "2020-02-03",
            "pasi": _pasi_regions(150),
            "reason": "trunk area transcribed wrongly",
        },
        headers={"If-Match": current.headers["ETag"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["scores"]["pasi"] == 15.0

    out = _outcomes(client, patient_id)
    assert out["latest"]["assessment_id"] == ids[1]
    assert out["latest"]["pasi"] == 15.0
    assert out["change"]["percent_improvement"] == 19.4
    assert out["responses"]["pasi50"] == {
        "reached_now": False,
        "first_reached_on": None,
        "days": None,
        "note": None,
    }
    assert out["relapse"]["evaluable_from"] is None


def test_an_amended_date_reorders_the_series(client: TestClient) -> None:
    patient_id, ids = _timeline(client, [("2020-01-06", 186), ("2020-02-03", 80)])
    current = client.get(f"/v1/assessments/{ids[1]}")
    r = client.put(
        f"/v1/assessments/{ids[1]}",
        json={"assessed_on": "2019-12-02", "pasi": _pasi_regions(80), "reason": "wrong date"},
        headers={"If-Match": current.headers["ETag"]},
    )
    assert r.status_code == 200, r.text
    out = _outcomes(client, patient_id)
    assert out["baseline"]["assessment_id"] == ids[1]
    assert out["baseline"]["pasi"] == 8.0
    assert [p["assessment_id"] for p in out["series"]] == [ids[1], ids[0]]


def test_an_assessment_entered_in_error_leaves_the_outcomes(client: TestClient) -> None:
    patient_id, ids = _timeline(
        client, [("2020-01-06", 186), ("2020-02-03", 80), ("2020-03-02", 36)]
    )
    assert _outcomes(client, patient_id)["responses"]["pasi75"]["reached_now"] is True

    r = client.delete(f"/v1/assessments/{ids[2]}", params={"reason": "wrong patient"})
    assert r.status_code == 200, r.text

    out = _outcomes(client, patient_id)
    assert [p["assessment_id"] for p in out["series"]] == ids[:2]
    assert out["latest"]["assessment_id"] == ids[1]
    assert out["responses"]["pasi75"]["first_reached_on"] is None

    r = client.request(
        "DELETE", f"/v1/assessments/{ids[0]}", json={"reason": "not a baseline visit"}
    )
    assert r.status_code == 200, r.text
    out = _outcomes(client, patient_id)
    assert out["baseline"]["assessment_id"] == ids[1]
    assert [p["assessment_id"] for p in out["series"]] == [ids[1]]


def test_a_patient_whose_assessments_are_all_entered_in_error_has_no_outcomes(
    client: TestClient,
) -> None:
    patient_id, ids = _timeline(client, [("2020-01-06", 186)])
    r = client.delete(f"/v1/assessments/{ids[0]}", params={"reason": "duplicate"})
    assert r.status_code == 200, r.text
    problem = _problem(client, patient_id, 404)
    assert problem["reason"] == "no-assessments"


def test_a_patient_without_assessments_is_404_no_assessments(client: TestClient) -> None:
    patient_id = _new_patient(client)
    problem = _problem(client, patient_id, 404)
    assert problem["reason"] == "no-assessments"
    assert problem["type"].endswith("not-found")
    assert problem["detail"]


def test_an_unknown_patient_is_404(client: TestClient) -> None:
    problem = _problem(client, str(uuid.uuid4()), 404)
    assert problem.get("reason") != "no-assessments"


# --------------------------------------------------------------------------- baseline choice


def test_a_flagged_baseline_is_used_and_earlier_assessments_count_for_nothing(
    client: TestClient,
) -> None:
    patient_id = _new_patient(client)
    before = _record(client, patient_id, "2019-01-01", 10)["id"]
    baseline = _record(client, patient_id, "2019-03-04", 186, is_baseline=True)["id"]
    _record(client, patient_id, "2019-05-27", 80)

    out = _outcomes(client, patient_id)

    assert out["baseline"]["assessment_id"] == baseline
    assert out["series"][0]["assessment_id"] == before
    assert out["series"][0]["days"] == -62
    assert out["series"][0]["counts"] is False
    assert out["series"][0]["percent_improvement"] is None
    # The earlier PASI 1.0 is not counted towards the absolute targets.
    assert out["responses"]["pasi_le_1"]["first_reached_on"] is None
    assert out["responses"]["pasi50"]["days"] == 84


def test_a_baseline_pasi_of_0_gives_nulls_with_notes_but_absolute_targets_apply(
    client: TestClient,
) -> None:
    patient_id, _ = _timeline(client, [("2020-01-06", 0), ("2020-02-03", 5), ("2020-03-02", 30)])

    out = _outcomes(client, patient_id)

    assert out["change"]["pasi_absolute"] == 3.0
    assert out["change"]["percent_improvement"] is None
    assert out["change"]["note"]
    for key in ("pasi50", "pasi75", "pasi90", "pasi100"):
        target = out["responses"][key]
        assert target["reached_now"] is None, key
        assert target["first_reached_on"] is None, key
        assert target["days"] is None, key
        assert target["note"], key
    for key in ("pasi_le_1", "pasi_le_2", "pasi_le_3", "pasi_le_5"):
        assert out["responses"][key]["first_reached_on"] == "2020-01-06", key
        assert out["responses"][key]["days"] == 0, key
        assert out["responses"][key]["note"] is None, key
    assert out["responses"]["pasi_le_2"]["reached_now"] is False
    assert out["responses"]["pasi_le_3"]["reached_now"] is True
    relapse = out["relapse"]
    assert relapse["evaluable_from"] is None
    assert relapse["relapsed_on"] is None
    assert relapse["relapse_free_days"] is None
    assert relapse["censored"] is None
    assert relapse["note"]
    assert out["episodes"] == []
    assert all(p["percent_improvement"] is None for p in out["series"])
    assert any("baseline" in note.lower() and "0" in note for note in out["notes"])
    clearance = out["clearance"]
    assert clearance["cleared_on"] == "2020-01-06"
    assert clearance["days_to_clearance"] == 0
    assert clearance["lasted_days"] == 28
    assert clearance["ongoing"] is False
    pasi90 = _outcomes(client, patient_id, clearance="pasi90")["clearance"]
    assert pasi90["cleared_on"] is None
    assert pasi90["note"]


@pytest.mark.parametrize("order", [(80, 150), (150, 80)])
def test_assessments_on_the_same_date_are_ordered_by_recording_time(
    client: TestClient, order: tuple[int, int]
) -> None:
    patient_id = _new_patient(client)
    _record(client, patient_id, "2020-01-06", 186)
    first = _record(client, patient_id, "2020-02-03", order[0])["id"]
    second = _record(client, patient_id, "2020-02-03", order[1])["id"]

    out = _outcomes(client, patient_id)

    assert [p["assessment_id"] for p in out["series"][1:]] == [first, second]
    assert out["latest"]["assessment_id"] == second
    assert out["latest"]["pasi"] == order[1] / 10
    assert out["responses"]["pasi50"]["reached_now"] is (order[1] == 80)


@pytest.mark.parametrize("order", [(186, 100), (100, 186)])
def test_of_two_assessments_on_the_first_date_the_first_recorded_is_baseline(
    client: TestClient, order: tuple[int, int]
) -> None:
    patient_id = _new_patient(client)
    first = _record(client, patient_id, "2020-01-06", order[0])["id"]
    _record(client, patient_id, "2020-01-06", order[1])
    out = _outcomes(client, patient_id)
    assert out["baseline"]["assessment_id"] == first
    assert out["baseline"]["pasi"] == order[0] / 10


# --------------------------------------------------------------------------- option validation


@pytest.mark.parametrize(
    ("parameter", "value", "allowed"),
    [
        ("clearance", "pasi95", ["pasi100", "pasi90", "pasi_le_1", "pasi_le_2", "iga_0"]),
        (
            "relapse",
            "npf",
            ["npf_50pct_loss", "ema_50pct_loss", "loss_of_pasi75", "pasi_above"],
        ),
    ],
)
def test_an_unknown_option_value_is_422_listing_the_allowed_ones(
    client: TestClient, parameter: str, value: str, allowed: list[str]
) -> None:
    patient_id, _ = _timeline(client, [("2020-01-06", 186)])
    problem = _problem(client, patient_id, 422, **{parameter: value})
    errors = [e for e in problem["errors"] if e.get("parameter") == parameter]
    assert errors, problem
    assert errors[0]["in"] == "query"
    for name in allowed:
        assert name in errors[0]["detail"], errors[0]


def test_a_treatment_option_that_is_not_a_uuid_is_422(client: TestClient) -> None:
    patient_id, _ = _timeline(client, [("2020-01-06", 186)])
    problem = _problem(client, patient_id, 422, treatment="week-12")
    assert any(e.get("parameter") == "treatment" for e in problem["errors"]), problem
