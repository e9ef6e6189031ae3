"""The stateless scoring routes through HTTP: POST /v1/scores/pasi, /bsa and /dlqi.

The numbers come from SPEC section 2: PASI in exact tenths (the binary-float traps must not show
through the API), BSA from regional percents or measured, bands on exact values, PGA×BSA, the
DLQI with its bands, two-part item 7 and the Cardiff missing-items rule, and the rule of tens.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app

PASI = "/v1/scores/pasi"
BSA = "/v1/scores/bsa"
DLQI = "/v1/scores/dlqi"
REGIONS = ("head_neck", "upper_limbs", "trunk", "lower_limbs")

# SPEC section 4: the worked example (PASI 28.7).
SPEC_EXAMPLE: dict[str, Any] = {
    "head_neck": {"erythema": 2, "induration": 2, "desquamation": 3, "area_percent": 20},
    "upper_limbs": {"erythema": 3, "induration": 2, "desquamation": 3, "area_percent": 35},
    "trunk": {"erythema": 3, "induration": 3, "desquamation": 3, "area_percent": 40},
    "lower_limbs": {"erythema": 3, "induration": 3, "desquamation": 3, "area_score": 4},
}


def region(
    erythema: int = 0,
    induration: int = 0,
    desquamation: int = 0,
    *,
    percent: float | None = None,
    score: int | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "erythema": erythema,
        "induration": induration,
        "desquamation": desquamation,
    }
    if percent is not None:
        out["area_percent"] = percent
    if score is not None:
        out["area_score"] = score
    return out


def pasi_body(**regions: dict[str, Any]) -> dict[str, Any]:
    """A PASI request; regions not given are clear (signs 0, 0 % involved)."""
    return {"pasi": {name: regions.get(name, region(percent=0)) for name in REGIONS}}


def score(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def dlqi_answers(total: int) -> dict[str, Any]:
    """All ten items answered, summing to `total` (0–30), item 7 as its two parts."""
    assert 0 <= total <= 30
    answers: dict[str, Any] = {}
    remaining = total
    for n in (1, 2, 3, 4, 5, 6, 8, 9, 10):
        answers[f"item{n}"] = min(3, remaining)
        remaining -= answers[f"item{n}"]
    if remaining == 3:
        answers["item7_prevented"] = True
    else:
        answers["item7_prevented"] = False
        answers["item7_problem"] = remaining
    return answers


# --- PASI --------------------------------------------------------------------------------


def test_spec_example_scores_28_7_with_its_regional_contributions(client: TestClient) -> None:
    scores = score(client, PASI, {"pasi": SPEC_EXAMPLE})
    assert scores["pasi"] == 28.7
    assert scores["pasi_regions"] == {
        "head_neck": 1.4,
        "upper_limbs": 4.8,
        "trunk": 8.1,
        "lower_limbs": 14.4,
    }
    assert scores["pasi_region_details"]["trunk"] == {
        "weight": 0.3,
        "severity_sum": 9,
        "area_score": 3,
        "contribution": 8.1,
    }
    assert scores["pasi_region_details"]["lower_limbs"]["area_score"] == 4


def test_regional_contributions_sum_exactly_to_pasi(client: TestClient) -> None:
    scores = score(client, PASI, {"pasi": SPEC_EXAMPLE})
    total = sum(Decimal(repr(v)) for v in scores["pasi_regions"].values())
    assert total == Decimal(repr(scores["pasi"]))


@pytest.mark.parametrize("form", ["area_score", "area_percent"])
def test_pasi_of_exactly_3_is_not_3_0000000000000004(client: TestClient, form: str) -> None:
    # 0.3·2·1 + 0.4·6·1 is 3.0000000000000004 in binary floats.
    area = {"score": 1} if form == "area_score" else {"percent": 5}
    body = pasi_body(
        head_neck=region(score=0) if form == "area_score" else region(percent=0),
        upper_limbs=region(score=0) if form == "area_score" else region(percent=0),
        trunk=region(1, 1, 0, **area),
        lower_limbs=region(2, 2, 2, **area),
    )
    scores = score(client, PASI, body)
    assert scores["pasi"] == 3.0
    assert scores["pasi_regions"]["trunk"] == 0.6
    assert scores["pasi_regions"]["lower_limbs"] == 2.4


def test_pasi_of_11_from_contributions_1_1_2_2_3_3_4_4_is_exactly_11(client: TestClient) -> None:
    # 1.1 + 2.2 + 3.3 + 4.4 is 11.000000000000002 in binary floats.
    body = pasi_body(**{name: region(4, 4, 3, score=1) for name in REGIONS})
    scores = score(client, PASI, body)
    assert scores["pasi_regions"] == {
        "head_neck": 1.1,
        "upper_limbs": 2.2,
        "trunk": 3.3,
        "lower_limbs": 4.4,
    }
    assert scores["pasi"] == 11.0


@pytest.mark.parametrize(
    ("signs", "area", "expected"),
    [
        ((0, 0, 0), 0, 0.0),
        ((4, 4, 4), 6, 72.0),
        ((1, 0, 0), 1, 1.0),
    ],
    ids=["clear", "maximum", "weights-sum-to-1"],
)
def test_pasi_range_ends(
    client: TestClient, signs: tuple[int, int, int], area: int, expected: float
) -> None:
    body = pasi_body(**{name: region(*signs, score=area) for name in REGIONS})
    assert score(client, PASI, body)["pasi"] == expected


@pytest.mark.parametrize(
    ("percent", "area_score"),
    [
        (0, 0),
        (0.0001, 1),
        (9.9999, 1),
        (10, 2),
        (29.9999, 2),
        (30, 3),
        (49.9999, 3),
        (50, 4),
        (69.9999, 4),
        (70, 5),
        (89.9999, 5),
        (90, 6),
        (100, 6),
    ],
)
def test_area_percent_maps_to_area_score_at_the_table_boundaries(
    client: TestClient, percent: float, area_score: int
) -> None:
    scores = score(client, PASI, pasi_body(trunk=region(4, 4, 4, percent=percent)))
    part = scores["pasi_region_details"]["trunk"]
    assert part["area_score"] == area_score
    assert scores["pasi"] == float(Decimal(3 * 12 * area_score) / 10)


# --- BSA through the PASI route ----------------------------------------------------------


def test_pasi_route_derives_bsa_when_every_region_gives_a_percent(client: TestClient) -> None:
    body = pasi_body(
        head_neck=region(1, 1, 1, percent=20),
        upper_limbs=region(1, 1, 1, percent=35),
        trunk=region(1, 1, 1, percent=40),
        lower_limbs=region(1, 1, 1, percent=10),
    )
    scores = score(client, PASI, body)
    assert scores["bsa_percent"] == 25.0  # 2 + 7 + 12 + 4
    assert scores["bsa_source"] == "regions"
    assert scores["bsa_severity"] == "severe"


def test_bsa_is_null_when_a_region_uses_area_score(client: TestClient) -> None:
    body = {"pasi": SPEC_EXAMPLE, "iga": 4}  # lower_limbs gives area_score 4
    scores = score(client, PASI, body)
    assert scores["bsa_percent"] is None
    assert scores["bsa_source"] is None
    assert scores["bsa_severity"] is None
    assert scores["iga"] == 4
    assert scores["pga_x_bsa"] is None
    assert scores["pga_scale"] is None


def test_measured_bsa_takes_precedence_over_regional_percents(client: TestClient) -> None:
    body = pasi_body(
        head_neck=region(percent=20),
        upper_limbs=region(percent=35),
        trunk=region(percent=40),
        lower_limbs=region(percent=10),
    )
    body["bsa_percent"] = 2.5
    scores = score(client, PASI, body)
    assert scores["bsa_percent"] == 2.5
    assert scores["bsa_source"] == "measured"
    assert scores["bsa_severity"] == "mild"


def test_measured_bsa_is_used_when_a_region_uses_area_score(client: TestClient) -> None:
    body = {"pasi": SPEC_EXAMPLE, "iga": 4, "bsa_percent": 12.5}
    scores = score(client, PASI, body)
    assert scores["bsa_percent"] == 12.5
    assert scores["bsa_source"] == "measured"
    assert scores["pga_x_bsa"] == 50.0
    assert scores["pga_scale"] == "iga_0_4"


def test_regional_bsa_of_ten_percent_everywhere_is_exactly_10_and_moderate(
    client: TestClient,
) -> None:
    # 0.1·10 + 0.2·10 + 0.3·10 + 0.4·10 is 10.000000000000002 in binary floats: "severe".
    body = pasi_body(**{name: region(percent=10) for name in REGIONS})
    body["dlqi"] = dlqi_answers(0)
    scores = score(client, PASI, body)
    assert scores["bsa_percent"] == 10.0
    assert scores["bsa_severity"] == "moderate"
    assert scores["severe_by_rule_of_tens"] is False


# --- BSA route ---------------------------------------------------------------------------


def test_bsa_from_regional_percents_with_each_regions_share(client: TestClient) -> None:
    body = {"area_percent": {"head_neck": 20, "upper_limbs": 35, "trunk": 40, "lower_limbs": 10}}
    result = score(client, BSA, body)
    assert result["bsa_percent"] == 25.0
    assert result["source"] == "regions"
    assert result["severity"] == "severe"
    assert result["region_contributions"] == {
        "head_neck": 2.0,
        "upper_limbs": 7.0,
        "trunk": 12.0,
        "lower_limbs": 4.0,
    }


def test_bsa_from_regions_is_reported_to_two_decimals(client: TestClient) -> None:
    # 0.12345 + 2.46912 + 9.99999 + 0 = 12.59256
    percents = {"head_neck": 1.2345, "upper_limbs": 12.3456, "trunk": 33.3333, "lower_limbs": 0}
    result = score(client, BSA, {"area_percent": percents})
    assert result["bsa_percent"] == 12.59


@pytest.mark.parametrize(
    ("percents", "reported", "severity"),
    [
        # 0.4 × 25.01 = 10.004: reported 10.0 but above 10, so severe.
        ({"lower_limbs": 25.01}, 10.0, "severe"),
        # 0.3 × 9.9999 = 2.99997: reported 3.0 but below 3, so mild.
        ({"trunk": 9.9999}, 3.0, "mild"),
    ],
    ids=["10.004-severe", "2.99997-mild"],
)
def test_bsa_severity_uses_the_exact_value_not_the_rounded_one(
    client: TestClient, percents: dict[str, float], reported: float, severity: str
) -> None:
    body = {"area_percent": {name: percents.get(name, 0) for name in REGIONS}}
    result = score(client, BSA, body)
    assert result["bsa_percent"] == reported
    assert result["severity"] == severity


def test_measured_bsa_wins_over_regions_on_the_bsa_route(client: TestClient) -> None:
    body = {
        "area_percent": {"head_neck": 20, "upper_limbs": 35, "trunk": 40, "lower_limbs": 10},
        "bsa_percent": 4,
    }
    result = score(client, BSA, body)
    assert result["bsa_percent"] == 4.0
    assert result["source"] == "measured"
    assert result["severity"] == "moderate"
    assert result["region_contributions"] is None


@pytest.mark.parametrize(
    ("bsa", "severity"),
    [
        (0, "mild"),
        (2.99, "mild"),
        (3, "moderate"),
        (10, "moderate"),
        (10.01, "severe"),
        (100, "severe"),
    ],
)
def test_bsa_severity_bands(client: TestClient, bsa: float, severity: str) -> None:
    result = score(client, BSA, {"bsa_percent": bsa})
    assert result["bsa_percent"] == bsa
    assert result["severity"] == severity


def test_bsa_route_needs_all_four_regional_percents(client: TestClient) -> None:
    r = client.post(BSA, json={"area_percent": {"head_neck": 20, "trunk": 40}})
    assert r.status_code == 422, r.text
    details = " ".join(e["detail"] for e in r.json()["errors"])
    assert "upper_limbs" in details
    assert "lower_limbs" in details


@pytest.mark.parametrize(
    ("iga", "bsa", "product"),
    [(3, 25, 75.0), (4, 100, 400.0), (0, 50, 0.0), (2, 12.5, 25.0)],
)
def test_pga_x_bsa_is_iga_times_bsa_on_the_0_4_scale(
    client: TestClient, iga: int, bsa: float, product: float
) -> None:
    result = score(client, BSA, {"bsa_percent": bsa, "iga": iga})
    assert result["pga_x_bsa"] == product
    assert result["pga_scale"] == "iga_0_4"


def test_pga_x_bsa_is_null_without_a_global_assessment(client: TestClient) -> None:
    result = score(client, BSA, {"bsa_percent": 25})
    assert result["iga"] is None
    assert result["pga_x_bsa"] is None
    assert result["pga_scale"] is None


def test_pga_x_bsa_from_regional_bsa(client: TestClient) -> None:
    body = {
        "area_percent": {"head_neck": 20, "upper_limbs": 35, "trunk": 40, "lower_limbs": 10},
        "iga": 3,
    }
    assert score(client, BSA, body)["pga_x_bsa"] == 75.0


# --- DLQI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "no_effect"),
        (1, "no_effect"),
        (2, "small"),
        (5, "small"),
        (6, "moderate"),
        (10, "moderate"),
        (11, "very_large"),
        (20, "very_large"),
        (21, "extremely_large"),
        (30, "extremely_large"),
    ],
)
def test_dlqi_bands_hongbo_2005(client: TestClient, total: int, band: str) -> None:
    result = score(client, DLQI, {"dlqi": dlqi_answers(total)})
    assert result["dlqi"] == total
    assert result["band"] == band
    assert result["unanswered"] == 0


@pytest.mark.parametrize(
    ("prevented", "problem", "item7"),
    [(True, None, 3), (False, 2, 2), (False, 1, 1), (False, 0, 0)],
    ids=["yes", "no-a-lot", "no-a-little", "no-not-at-all"],
)
def test_dlqi_item_7_scores_from_its_two_parts(
    client: TestClient, prevented: bool, problem: int | None, item7: int
) -> None:
    answers: dict[str, Any] = {f"item{n}": 0 for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)}
    answers["item7_prevented"] = prevented
    if problem is not None:
        answers["item7_problem"] = problem
    result = score(client, DLQI, {"dlqi": answers})
    assert result["item_scores"][6] == item7
    assert result["dlqi"] == item7


@pytest.mark.parametrize(
    ("item7", "pointer"),
    [
        ({"item7_prevented": True, "item7_problem": 1}, "/dlqi"),
        ({"item7_problem": 2}, "/dlqi"),
        ({"item7_prevented": False, "item7_problem": 3}, "/dlqi/item7_problem"),
        ({"item7_prevented": "yes"}, "/dlqi/item7_prevented"),
    ],
    ids=["yes-with-second-part", "second-part-alone", "second-part-3", "first-part-string"],
)
def test_dlqi_item_7_inconsistent_parts_are_rejected(
    client: TestClient, item7: dict[str, Any], pointer: str
) -> None:
    answers: dict[str, Any] = {f"item{n}": 1 for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)}
    answers.update(item7)
    r = client.post(DLQI, json={"dlqi": answers})
    assert r.status_code == 422, r.text
    assert pointer in [e["pointer"] for e in r.json()["errors"]]


@pytest.mark.parametrize("how", ["omitted", "null"])
def test_dlqi_one_unanswered_item_scores_zero(client: TestClient, how: str) -> None:
    answers = dlqi_answers(30)
    if how == "omitted":
        del answers["item3"]
    else:
        answers["item3"] = None
    result = score(client, DLQI, {"dlqi": answers})
    assert result["dlqi"] == 27
    assert result["band"] == "extremely_large"
    assert result["unanswered"] == 1
    assert result["item_scores"][2] is None
    assert result["note"]


def test_dlqi_unanswered_item_7_counts_as_the_one_missing_item(client: TestClient) -> None:
    answers = dlqi_answers(27)  # items 1–6 and 8–10 all 3; item 7 "no", "not at all"
    del answers["item7_prevented"], answers["item7_problem"]
    result = score(client, DLQI, {"dlqi": answers})
    assert result["dlqi"] == 27
    assert result["unanswered"] == 1
    assert result["item_scores"][6] is None


def test_dlqi_two_unanswered_items_give_no_total(client: TestClient) -> None:
    answers = dlqi_answers(20)
    del answers["item1"]
    answers["item9"] = None
    result = score(client, DLQI, {"dlqi": answers})
    assert result["dlqi"] is None
    assert result["band"] is None
    assert result["unanswered"] == 2
    assert result["note"]


def test_pasi_route_carries_the_dlqi_total_and_band(client: TestClient) -> None:
    body = {"pasi": SPEC_EXAMPLE, "dlqi": dlqi_answers(7)}
    scores = score(client, PASI, body)
    assert scores["dlqi"] == 7
    assert scores["dlqi_band"] == "moderate"


def test_pasi_route_gives_no_dlqi_total_with_two_unanswered_items(client: TestClient) -> None:
    answers = dlqi_answers(7)
    del answers["item1"], answers["item2"]
    scores = score(client, PASI, {"pasi": SPEC_EXAMPLE, "dlqi": answers})
    assert scores["dlqi"] is None
    assert scores["dlqi_band"] is None


# --- Rule of tens ------------------------------------------------------------------------


def _pasi_10() -> dict[str, Any]:
    """PASI exactly 10.0: lower limbs 0.4 × 5 × 5, every region with a percent (BSA 0.4·x)."""
    return {
        "head_neck": region(percent=0),
        "upper_limbs": region(percent=0),
        "trunk": region(percent=0),
        "lower_limbs": region(2, 2, 1, percent=75),
    }


def test_rule_of_tens_exactly_ten_everywhere_is_not_severe(client: TestClient) -> None:
    body = {"pasi": _pasi_10(), "bsa_percent": 10, "dlqi": dlqi_answers(10)}
    scores = score(client, PASI, body)
    assert scores["pasi"] == 10.0
    assert scores["severe_by_rule_of_tens"] is False


@pytest.mark.parametrize(
    "override",
    [
        {"bsa_percent": 10.01},
        {"dlqi": dlqi_answers(11)},
        {"pasi": {**_pasi_10(), "head_neck": region(1, 0, 0, percent=5)}},  # PASI 10.1
    ],
    ids=["bsa-over-10", "dlqi-over-10", "pasi-over-10"],
)
def test_rule_of_tens_any_one_over_ten_is_severe(
    client: TestClient, override: dict[str, Any]
) -> None:
    body = {"pasi": _pasi_10(), "bsa_percent": 10, "dlqi": dlqi_answers(10)}
    body.update(copy.deepcopy(override))
    assert score(client, PASI, body)["severe_by_rule_of_tens"] is True


def test_rule_of_tens_pasi_over_ten_decides_even_without_bsa_or_dlqi(client: TestClient) -> None:
    body = pasi_body(**{name: region(4, 4, 3, score=1) for name in REGIONS})  # PASI 11
    scores = score(client, PASI, body)
    assert scores["bsa_percent"] is None
    assert scores["severe_by_rule_of_tens"] is True


def test_rule_of_tens_is_undecided_when_unknown_values_could_decide_it(
    client: TestClient,
) -> None:
    scores = score(client, PASI, {"pasi": {**_pasi_10(), "trunk": region(score=0)}})
    assert scores["pasi"] == 10.0
    assert scores["bsa_percent"] is None
    assert scores["dlqi"] is None
    assert scores["severe_by_rule_of_tens"] is None


# --- Swagger examples run as-is ----------------------------------------------------------

SCORING_ROUTES = (PASI, BSA, DLQI)


def _request_examples(doc: dict[str, Any], path: str) -> list[Any]:
    """Examples Swagger UI shows for a route's JSON body (media type or schema examples)."""
    media = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    found = [e["value"] for e in media.get("examples", {}).values() if "value" in e]
    if "example" in media:
        found.append(media["example"])
    schema = media["schema"]
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    found.extend(schema.get("examples", []))
    if "example" in schema:
        found.append(schema["example"])
    return found


_OPENAPI = create_app().openapi()
_EXAMPLES = [
    pytest.param(path, example, id=f"{path.rsplit('/', 1)[-1]}-{i}")
    for path in SCORING_ROUTES
    for i, example in enumerate(_request_examples(_OPENAPI, path))
]


@pytest.mark.parametrize("path", SCORING_ROUTES)
def test_every_scoring_route_documents_a_request_example(path: str) -> None:
    assert _request_examples(_OPENAPI, path), f"{path} has no request body example"


@pytest.mark.parametrize(("path", "example"), _EXAMPLES)
def test_swagger_example_posted_as_is_answers_200(
    client: TestClient, path: str, example: Any
) -> None:
    r = client.post(path, json=example)
    assert r.status_code == 200, r.text
