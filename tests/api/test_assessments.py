"""Serial assessments: record with scores, read with ETag, list, amend (If-Match), mark
entered-in-error, history, the one-active-baseline rule, and a 10,000-assessment patient."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from app.db.models import Assessment, RecordVersion
from app.main import create_app
from app.schemas.records import AssessmentIn
from app.schemas.scores import PASI_EXAMPLE
from app.services.assessments import content_of
from app.services.scoring import compute_scores
from tests.api.helpers import (
    all_pages,
    amend_body,
    assessment_body,
    assessment_content,
    bearer,
    create_api_key,
    drop_nulls,
    error_locations,
    new_assessment,
    new_patient,
    pasi_inputs,
    problem,
)
from tests.conftest import make_settings
from tests.dbs import empty_database, migrate, selected_backends

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
LATEST_ZONE = timezone(timedelta(hours=14))  # the first to reach a new date (Line Islands)


def _post(client: TestClient, patient_id: str, body: dict[str, Any], **kw: Any) -> Any:
    return client.post(f"/v1/patients/{patient_id}/assessments", json=body, **kw)


def _list(client: TestClient, patient_id: str, **params: Any) -> list[dict[str, Any]]:
    return all_pages(client, f"/v1/patients/{patient_id}/assessments", params)


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


def _history(client: TestClient, assessment_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/assessments/{assessment_id}/history")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _amend(
    client: TestClient, assessment: dict[str, Any], etag: str | None, reason: str, **changes: Any
) -> Any:
    headers = {} if etag is None else {"If-Match": etag}
    return client.put(
        f"/v1/assessments/{assessment['id']}",
        json=amend_body(assessment, reason, **changes),
        headers=headers,
    )


def _delete(client: TestClient, assessment_id: str, **kw: Any) -> Any:
    return client.request("DELETE", f"/v1/assessments/{assessment_id}", **kw)


def _cursor(values: list[Any]) -> str:
    """A cursor forged by a client (the service's own are opaque base64url JSON)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _utc(stamp: str) -> datetime:
    assert stamp.endswith("Z"), stamp
    return datetime.fromisoformat(stamp)


# --- record and read --------------------------------------------------------------------------


def test_recording_answers_201_with_the_inputs_the_scores_and_an_etag(client: TestClient) -> None:
    patient = new_patient(client)
    body = assessment_body(
        "2011-10-20", visit="Baseline", assessor="Dr Ahmed", notes="first visit", iga=4
    )
    r = _post(client, patient["id"], body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert r.headers["ETag"] == '"1"'
    assert r.headers["Location"] == f"/v1/assessments/{out['id']}"
    assert out["patient_id"] == patient["id"]
    assert out["version"] == 1
    assert out["status"] == "active"
    assert drop_nulls(assessment_content(out)) == {**body, "is_baseline": False}
    assert out["bsa_percent"] is None
    assert out["dlqi"] is None
    scores = out["scores"]
    assert scores["pasi"] == 28.7
    assert scores["pasi_regions"] == {
        "head_neck": 1.4,
        "upper_limbs": 4.8,
        "trunk": 8.1,
        "lower_limbs": 14.4,
    }
    assert scores["iga"] == 4
    # BSA needs all four regional percentages (lower limbs gave an area score): null.
    assert scores["bsa_percent"] is None
    assert scores["pga_x_bsa"] is None
    assert scores["dlqi"] is None
    assert _utc(out["recorded_at"]) == _utc(out["updated_at"])


def test_recorded_scores_include_measured_bsa_pga_x_bsa_and_dlqi(client: TestClient) -> None:
    patient = new_patient(client)
    dlqi = {f"item{n}": 1 for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)}
    dlqi |= {"item7_prevented": False, "item7_problem": 2}
    out = new_assessment(
        client, patient["id"], "2020-01-01", pasi_level=12.4, iga=3, bsa_percent=12.5, dlqi=dlqi
    )
    scores = out["scores"]
    assert scores["pasi"] == 12.4
    assert scores["bsa_percent"] == 12.5
    assert scores["pga_x_bsa"] == 37.5
    assert scores["dlqi"] == 11
    assert scores["dlqi_band"] == "very_large"
    assert scores["severe_by_rule_of_tens"] is True
    assert out["dlqi"]["item7_problem"] == 2


def test_reading_an_assessment_returns_what_was_recorded_with_the_same_etag(
    client: TestClient,
) -> None:
    patient = new_patient(client)
    r = _post(client, patient["id"], assessment_body("2020-01-01", visit="Week 12", iga=2))
    assert r.status_code == 201, r.text
    got = client.get(f"/v1/assessments/{r.json()['id']}")
    assert got.status_code == 200, got.text
    assert got.headers["ETag"] == r.headers["ETag"]
    assert got.json() == r.json()


def test_recording_for_an_unknown_patient_is_404_and_stores_nothing(client: TestClient) -> None:
    problem(_post(client, UNKNOWN_ID, assessment_body("2020-01-01")), 404)
    patient = new_patient(client)
    assert _list(client, patient["id"]) == []


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/assessments/{UNKNOWN_ID}",
        f"/v1/assessments/{UNKNOWN_ID}/history",
        f"/v1/patients/{UNKNOWN_ID}/assessments",
    ],
)
def test_reading_something_unknown_is_404(client: TestClient, path: str) -> None:
    problem(client.get(path), 404)


def test_amending_or_deleting_an_unknown_assessment_is_404(client: TestClient) -> None:
    body = {**assessment_body("2020-01-01"), "reason": "typo"}
    problem(
        client.put(f"/v1/assessments/{UNKNOWN_ID}", json=body, headers={"If-Match": '"1"'}), 404
    )
    problem(_delete(client, UNKNOWN_ID, params={"reason": "duplicate"}), 404)


@pytest.mark.parametrize(
    "path", ["/v1/assessments/nope", "/v1/assessments/42/history", "/v1/patients/x/assessments"]
)
def test_an_id_that_is_not_a_uuid_is_422(client: TestClient, path: str) -> None:
    problem(client.get(path), 422)


def test_unknown_fields_in_an_assessment_are_refused(client: TestClient) -> None:
    patient = new_patient(client)
    body = problem(_post(client, patient["id"], assessment_body("2020-01-01", vist="W12")), 422)
    assert "/vist" in error_locations(body)
    assert _list(client, patient["id"]) == []


def test_pasi_inputs_are_required(client: TestClient) -> None:
    patient = new_patient(client)
    body = problem(_post(client, patient["id"], {"assessed_on": "2020-01-01"}), 422)
    assert "/pasi" in error_locations(body)


# --- assessed_on ------------------------------------------------------------------------------


def test_assessed_on_after_the_current_date_everywhere_on_earth_is_422(client: TestClient) -> None:
    patient = new_patient(client)
    tomorrow_everywhere = datetime.now(LATEST_ZONE).date() + timedelta(days=1)
    for day in (tomorrow_everywhere, tomorrow_everywhere + timedelta(days=400)):
        body = problem(_post(client, patient["id"], assessment_body(day)), 422)
        assert "/assessed_on" in error_locations(body)
    assert _list(client, patient["id"]) == []


def test_assessed_on_today_in_utc_is_accepted(client: TestClient) -> None:
    patient = new_patient(client)
    today = datetime.now(UTC).date()
    assert new_assessment(client, patient["id"], today)["assessed_on"] == today.isoformat()


def test_assessed_on_today_somewhere_on_earth_is_accepted(client: TestClient) -> None:
    # Already "today" in UTC+14 while it may still be yesterday in UTC: not in the future.
    patient = new_patient(client)
    today_kiribati = datetime.now(LATEST_ZONE).date()
    out = new_assessment(client, patient["id"], today_kiribati)
    assert out["assessed_on"] == today_kiribati.isoformat()


def test_assessed_on_before_1900_is_422_and_1900_01_01_is_accepted(client: TestClient) -> None:
    patient = new_patient(client)
    body = problem(_post(client, patient["id"], assessment_body("1899-12-31")), 422)
    assert "/assessed_on" in error_locations(body)
    assert new_assessment(client, patient["id"], "1900-01-01")["assessed_on"] == "1900-01-01"


@pytest.mark.parametrize(
    "assessed_on",
    [
        pytest.param("2020-13-01", id="month-13"),
        pytest.param("2019-02-29", id="not-a-leap-year"),
        pytest.param("20200101", id="basic-format"),
        pytest.param("2020-1-1", id="no-zero-padding"),
        pytest.param("01/02/2020", id="slashes"),
        pytest.param("2020-W01-1", id="week-date"),
        pytest.param("2020-001", id="ordinal-date"),
        pytest.param("2020-01-01T00:00:00", id="datetime"),
        pytest.param("2020-01-01T00:00:00Z", id="datetime-utc"),
        pytest.param("2020-01-01 10:00", id="datetime-space"),
        pytest.param("2020-01-01\n", id="trailing-newline"),
        pytest.param(" 2020-01-01", id="leading-space"),
        pytest.param("yesterday", id="word"),
        pytest.param("", id="empty"),
        pytest.param(20200101, id="integer"),
        pytest.param(1577836800, id="unix-time"),
        pytest.param(2020.5, id="float"),
        pytest.param(True, id="boolean"),
        pytest.param(None, id="null"),
        pytest.param(["2020-01-01"], id="list"),
    ],
)
def test_assessed_on_must_be_a_yyyy_mm_dd_date(client: TestClient, assessed_on: object) -> None:
    patient = new_patient(client)
    body = assessment_body("2020-01-01")
    body["assessed_on"] = assessed_on
    answer = problem(_post(client, patient["id"], body), 422)
    assert "/assessed_on" in error_locations(answer)


# --- listing ----------------------------------------------------------------------------------


def test_the_list_is_in_assessed_on_then_recorded_order(client: TestClient) -> None:
    patient = new_patient(client)
    pid = patient["id"]
    march = new_assessment(client, pid, "2020-03-01")
    jan_first = new_assessment(client, pid, "2020-01-01")
    feb = new_assessment(client, pid, "2020-02-01")
    jan_second = new_assessment(client, pid, "2020-01-01")
    expected = [jan_first["id"], jan_second["id"], feb["id"], march["id"]]
    assert _ids(_list(client, pid)) == expected
    for limit in (1, 2, 3):
        assert _ids(_list(client, pid, limit=limit)) == expected


def test_a_page_holds_limit_items_and_the_last_page_has_no_cursor(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    for n in range(5):
        new_assessment(client, pid, date(2020, 1, 1) + timedelta(days=n))
    r = client.get(f"/v1/patients/{pid}/assessments", params={"limit": 2})
    assert r.status_code == 200, r.text
    first = r.json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    sizes = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = client.get(f"/v1/patients/{pid}/assessments", params=params).json()
        sizes.append(len(page["items"]))
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sizes == [2, 2, 1]


def test_the_list_filters_by_date_range_and_visit(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    base = new_assessment(client, pid, "2020-01-01", visit="Baseline")
    w4 = new_assessment(client, pid, "2020-01-29", visit="Week 4")
    w12 = new_assessment(client, pid, "2020-03-25", visit="Week 12")
    unscheduled = new_assessment(client, pid, "2020-03-25", visit="Unscheduled")
    w24 = new_assessment(client, pid, "2020-06-17", visit="Week 24")

    assert _ids(_list(client, pid, **{"from": "2020-01-29"})) == _ids([w4, w12, unscheduled, w24])
    assert _ids(_list(client, pid, to="2020-03-25")) == _ids([base, w4, w12, unscheduled])
    assert _ids(_list(client, pid, **{"from": "2020-01-02", "to": "2020-03-24"})) == [w4["id"]]
    assert _ids(_list(client, pid, **{"from": "2020-03-25", "to": "2020-03-25"})) == _ids(
        [w12, unscheduled]
    )
    assert _ids(_list(client, pid, visit="Week 12")) == [w12["id"]]
    assert _ids(_list(client, pid, visit="week 12")) == []
    assert _ids(_list(client, pid, visit="Week 12", to="2020-01-01")) == []
    # Filters hold across pages.
    assert _ids(_list(client, pid, limit=1, **{"from": "2020-01-29", "to": "2020-03-25"})) == _ids(
        [w4, w12, unscheduled]
    )


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2020-13-01"},
        {"to": "tomorrow"},
        {"from": "2020-01-01T00:00:00"},
        {"limit": 201},
        {"limit": 0},
        {"cursor": "not-a-cursor"},
        {"cursor": _cursor(["2020-01-01", "x", "y"])},
        {"cursor": _cursor(["2020-01-01", "2024-01-01T00:00:00", UNKNOWN_ID])},  # no offset
        {"cursor": _cursor(["0001-01-01", "0001-01-01T00:00:00+01:00", UNKNOWN_ID])},
        {"cursor": _cursor(["2020-01-01", "2024-01-01T00:00:00Z"])},
    ],
    ids=[
        "bad-from",
        "bad-to",
        "datetime-from",
        "limit-201",
        "limit-0",
        "not-a-cursor",
        "bad-cursor-values",
        "cursor-timestamp-without-offset",
        "cursor-timestamp-before-year-1-in-utc",
        "cursor-too-short",
    ],
)
def test_invalid_list_parameters_are_422(client: TestClient, params: dict[str, Any]) -> None:
    pid = new_patient(client)["id"]
    new_assessment(client, pid, "2020-01-01")
    body = problem(client.get(f"/v1/patients/{pid}/assessments", params=params), 422)
    assert set(params) & error_locations(body)


def test_each_patient_lists_only_their_own_assessments(client: TestClient) -> None:
    first = new_patient(client, "S-1")["id"]
    second = new_patient(client, "S-2")["id"]
    mine = new_assessment(client, first, "2020-01-01")
    theirs = new_assessment(client, second, "2020-01-01")
    assert _ids(_list(client, first)) == [mine["id"]]
    assert _ids(_list(client, second)) == [theirs["id"]]


# --- baseline ---------------------------------------------------------------------------------


def test_flagging_a_second_active_baseline_is_409(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    first = new_assessment(client, pid, "2020-01-01", is_baseline=True)
    problem(_post(client, pid, assessment_body("2020-02-01", is_baseline=True)), 409)
    assert _ids(_list(client, pid)) == [first["id"]]
    # Unflagged assessments are still fine.
    new_assessment(client, pid, "2020-02-01")


def test_baselines_are_per_patient(client: TestClient) -> None:
    new_assessment(client, new_patient(client, "S-1")["id"], "2020-01-01", is_baseline=True)
    new_assessment(client, new_patient(client, "S-2")["id"], "2020-01-01", is_baseline=True)


def test_a_new_baseline_is_allowed_once_the_first_is_amended_to_not_baseline(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", is_baseline=True))
    assert r.status_code == 201, r.text
    amended = _amend(client, r.json(), r.headers["ETag"], "wrong visit", is_baseline=False)
    assert amended.status_code == 200, amended.text
    assert amended.json()["is_baseline"] is False
    second = new_assessment(client, pid, "2020-02-01", is_baseline=True)
    assert second["is_baseline"] is True


def test_a_new_baseline_is_allowed_once_the_first_is_entered_in_error(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    first = new_assessment(client, pid, "2020-01-01", is_baseline=True)
    r = _delete(client, first["id"], params={"reason": "wrong patient"})
    assert r.status_code == 200, r.text
    new_assessment(client, pid, "2020-02-01", is_baseline=True)


def test_amending_another_assessment_into_a_second_baseline_is_409(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    new_assessment(client, pid, "2020-01-01", is_baseline=True)
    r = _post(client, pid, assessment_body("2020-02-01"))
    assert r.status_code == 201, r.text
    problem(_amend(client, r.json(), r.headers["ETag"], "flag", is_baseline=True), 409)
    assert client.get(f"/v1/assessments/{r.json()['id']}").json()["is_baseline"] is False
    assert len(_history(client, r.json()["id"])) == 1


def test_amending_the_baseline_itself_keeps_it_the_baseline(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", is_baseline=True, iga=4))
    assert r.status_code == 201, r.text
    amended = _amend(client, r.json(), r.headers["ETag"], "IGA misread", iga=3)
    assert amended.status_code == 200, amended.text
    assert amended.json()["is_baseline"] is True
    assert amended.json()["iga"] == 3


@pytest.mark.parametrize("flag", ["true", 1, "yes"])
def test_is_baseline_must_be_a_json_boolean(client: TestClient, flag: object) -> None:
    pid = new_patient(client)["id"]
    body = problem(_post(client, pid, assessment_body("2020-01-01", is_baseline=flag)), 422)
    assert "/is_baseline" in error_locations(body)


# --- amend ------------------------------------------------------------------------------------


def test_amending_without_if_match_is_428_and_changes_nothing(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01", iga=4)
    problem(_amend(client, created, None, "IGA misread", iga=3), 428)
    assert client.get(f"/v1/assessments/{created['id']}").json() == created
    assert len(_history(client, created["id"])) == 1


@pytest.mark.parametrize("stale", ['"0"', '"2"', 'W/"1"', "1", "garbage"])
def test_amending_with_a_stale_if_match_is_412_and_changes_nothing(
    client: TestClient, stale: str
) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01", iga=4)
    body = problem(_amend(client, created, stale, "IGA misread", iga=3), 412)
    assert body.get("current_etag") == '"1"'
    assert client.get(f"/v1/assessments/{created['id']}").json() == created
    assert len(_history(client, created["id"])) == 1


def test_amending_with_the_etag_read_before_someone_elses_amendment_is_412(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", iga=4))
    first_etag = r.headers["ETag"]
    ok = _amend(client, r.json(), first_etag, "IGA misread", iga=3)
    assert ok.status_code == 200, ok.text
    problem(_amend(client, r.json(), first_etag, "IGA misread again", iga=2), 412)
    assert client.get(f"/v1/assessments/{r.json()['id']}").json()["iga"] == 3


@pytest.mark.parametrize("reason", [None, "", "x" * 1001])
def test_amending_without_a_valid_reason_is_422(client: TestClient, reason: str | None) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", iga=4))
    body = {**assessment_content(r.json()), "iga": 3}
    if reason is not None:
        body["reason"] = reason
    answer = problem(
        client.put(
            f"/v1/assessments/{r.json()['id']}", json=body, headers={"If-Match": r.headers["ETag"]}
        ),
        422,
    )
    assert "/reason" in error_locations(answer)
    assert len(_history(client, r.json()["id"])) == 1


def test_amending_needs_the_full_clinical_content(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", iga=4))
    answer = problem(
        client.put(
            f"/v1/assessments/{r.json()['id']}",
            json={"iga": 3, "reason": "IGA misread"},
            headers={"If-Match": r.headers["ETag"]},
        ),
        422,
    )
    assert {"/assessed_on", "/pasi"} <= error_locations(answer)


def test_amending_answers_200_with_the_new_content_and_a_new_etag(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", visit="Baseline", iga=4))
    created = r.json()
    amended = _amend(client, created, r.headers["ETag"], "IGA misread", iga=3, visit="Week 0")
    assert amended.status_code == 200, amended.text
    out = amended.json()
    assert amended.headers["ETag"] == '"2"'
    assert amended.headers["ETag"] != r.headers["ETag"]
    assert out["version"] == 2
    assert out["iga"] == 3
    assert out["visit"] == "Week 0"
    assert out["id"] == created["id"]
    assert out["recorded_at"] == created["recorded_at"]
    assert _utc(out["updated_at"]) >= _utc(created["updated_at"])

    got = client.get(f"/v1/assessments/{created['id']}")
    assert got.headers["ETag"] == '"2"'
    assert got.json() == out

    # The new ETag works for the next amendment.
    again = _amend(client, out, amended.headers["ETag"], "visit label", visit="Baseline")
    assert again.status_code == 200, again.text
    assert again.headers["ETag"] == '"3"'


def test_if_match_may_list_several_etags(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01", iga=4)
    r = _amend(client, created, '"7", "1"', "IGA misread", iga=3)
    assert r.status_code == 200, r.text


def test_scores_are_recomputed_when_the_inputs_are_amended(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", pasi_level=18.6, iga=4))
    assert r.json()["scores"]["pasi"] == 18.6
    amended = _amend(
        client, r.json(), r.headers["ETag"], "trunk mis-scored", pasi=pasi_inputs(9.3), iga=2
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["scores"]["pasi"] == 9.3
    assert amended.json()["scores"]["iga"] == 2
    assert client.get(f"/v1/assessments/{r.json()['id']}").json()["scores"]["pasi"] == 9.3
    assert [v["scores"]["pasi"] for v in _history(client, r.json()["id"])] == [18.6, 9.3]


def test_amending_assessed_on_moves_the_assessment_in_the_list(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01"))
    later = new_assessment(client, pid, "2020-02-01")
    assert _ids(_list(client, pid)) == [r.json()["id"], later["id"]]
    amended = _amend(client, r.json(), r.headers["ETag"], "date typo", assessed_on="2020-03-01")
    assert amended.status_code == 200, amended.text
    assert _ids(_list(client, pid)) == [later["id"], r.json()["id"]]


def test_an_amendment_obeys_the_same_date_rules(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01"))
    future = (datetime.now(LATEST_ZONE).date() + timedelta(days=1)).isoformat()
    for bad in (future, "1899-12-31", "2020-01-01T00:00:00"):
        answer = problem(_amend(client, r.json(), r.headers["ETag"], "date", assessed_on=bad), 422)
        assert "/assessed_on" in error_locations(answer)
    assert len(_history(client, r.json()["id"])) == 1


def test_history_keeps_every_version_with_who_when_why_and_the_old_content(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    r = _post(client, pid, assessment_body("2020-01-01", visit="Baseline", iga=4))
    created = r.json()
    name, token = create_api_key(client, "second-clinician")
    amended = client.put(
        f"/v1/assessments/{created['id']}",
        json=amend_body(created, "IGA transcribed wrongly", iga=3, pasi=pasi_inputs(20)),
        headers={"If-Match": r.headers["ETag"], **bearer(token)},
    )
    assert amended.status_code == 200, amended.text

    first, second = _history(client, created["id"])
    assert first["version"] == 1
    assert first["action"] == "create"
    assert first["recorded_by"] == "bootstrap-admin"
    assert first["reason"] is None
    assert first["status"] == "active"
    assert assessment_content(first) == assessment_content(created)
    assert first["scores"] == created["scores"]

    assert second["version"] == 2
    assert second["action"] == "amend"
    assert second["recorded_by"] == name
    assert second["reason"] == "IGA transcribed wrongly"
    assert second["status"] == "active"
    assert assessment_content(second) == assessment_content(amended.json())
    assert second["iga"] == 3
    assert second["scores"]["pasi"] == 20

    before = datetime.now(UTC)
    for version in (first, second):
        recorded = _utc(version["recorded_at"])
        assert recorded.utcoffset() == timedelta(0)
        assert recorded <= before
        assert recorded > before - timedelta(minutes=5)
    assert _utc(first["recorded_at"]) <= _utc(second["recorded_at"])
    assert _utc(first["recorded_at"]) == _utc(created["recorded_at"])


# --- entered-in-error -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["query", "body"])
def test_deleting_marks_entered_in_error_and_erases_nothing(client: TestClient, where: str) -> None:
    pid = new_patient(client)["id"]
    kept = new_assessment(client, pid, "2020-01-01")
    gone = new_assessment(client, pid, "2020-02-01", visit="Week 4", iga=2)
    reason = "recorded against the wrong patient"
    kw: dict[str, Any] = (
        {"params": {"reason": reason}} if where == "query" else {"json": {"reason": reason}}
    )
    r = _delete(client, gone["id"], **kw)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "entered-in-error"
    assert r.headers["ETag"] == '"2"'

    assert _ids(_list(client, pid)) == [kept["id"]]
    assert _ids(_list(client, pid, visit="Week 4")) == []

    got = client.get(f"/v1/assessments/{gone['id']}")
    assert got.status_code == 200, got.text
    assert got.json()["status"] == "entered-in-error"
    assert assessment_content(got.json()) == assessment_content(gone)
    assert got.json()["scores"] == gone["scores"]

    first, second = _history(client, gone["id"])
    assert (first["status"], first["reason"]) == ("active", None)
    assert second["version"] == 2
    assert second["action"] == "entered-in-error"
    assert second["status"] == "entered-in-error"
    assert second["reason"] == reason
    assert second["recorded_by"] == "bootstrap-admin"
    assert assessment_content(second) == assessment_content(gone)
    _utc(second["recorded_at"])


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({}, id="no-reason"),
        pytest.param({"params": {"reason": ""}}, id="empty-query-reason"),
        pytest.param({"json": {"reason": ""}}, id="empty-body-reason"),
        pytest.param({"json": {}}, id="body-without-reason"),
        pytest.param({"json": {"reason": "dup", "why": "x"}}, id="unknown-body-field"),
    ],
)
def test_deleting_without_a_reason_is_422_and_changes_nothing(
    client: TestClient, kw: dict[str, Any]
) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01")
    problem(_delete(client, created["id"], **kw), 422)
    assert _ids(_list(client, pid)) == [created["id"]]
    assert client.get(f"/v1/assessments/{created['id']}").json()["status"] == "active"
    assert len(_history(client, created["id"])) == 1


def test_deleting_with_a_stale_if_match_is_412(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01")
    problem(
        _delete(client, created["id"], params={"reason": "dup"}, headers={"If-Match": '"9"'}), 412
    )
    assert _ids(_list(client, pid)) == [created["id"]]
    r = _delete(client, created["id"], params={"reason": "dup"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text


def test_amending_an_entered_in_error_assessment_is_409(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_assessment(client, pid, "2020-01-01", iga=4)
    r = _delete(client, created["id"], params={"reason": "duplicate"})
    assert r.status_code == 200, r.text
    problem(_amend(client, created, r.headers["ETag"], "fix IGA", iga=3), 409)
    got = client.get(f"/v1/assessments/{created['id']}").json()
    assert got["status"] == "entered-in-error"
    assert got["iga"] == 4
    assert len(_history(client, created["id"])) == 2


# --- 10,000 assessments -----------------------------------------------------------------------


def _bulk_insert(client: TestClient, patient_id: str, count: int, in_error: int) -> list[str]:
    """Insert `count` active and `in_error` entered-in-error assessments straight into the
    database (with their first history version), as the service would store them. About 25
    share each date, and 2 or 3 of those share the same recorded_at too, so the keyset cursor
    meets full ties on (assessed_on, recorded_at)."""
    start = date(2000, 1, 1)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    template = AssessmentIn.model_validate(assessment_body("2000-01-01", visit="Bulk", iga=3))
    computed = compute_scores(template)
    scores = computed.scores.model_dump(mode="json")
    total = count + in_error
    in_error_slots = set(range(0, total, total // in_error)[:in_error]) if in_error else set()
    rows: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    active_ids: list[str] = []
    for n in range(total):
        assessment_id = uuid.uuid4()
        assessed_on = start + timedelta(days=(n * 7919) % 400)
        recorded_at = t0 + timedelta(seconds=n // 1000)
        entered_in_error = n in in_error_slots
        content = content_of(template) | {"assessed_on": assessed_on.isoformat()}
        rows.append(
            {
                "id": assessment_id,
                "patient_id": uuid.UUID(patient_id),
                "version": 1,
                "entered_in_error": entered_in_error,
                "assessed_on": assessed_on,
                "recorded_at": recorded_at,
                "updated_at": recorded_at,
                "visit": "Bulk",
                "is_baseline": False,
                "pasi_tenths": computed.pasi_tenths,
                "bsa_percent": computed.bsa_percent,
                "iga": computed.iga,
                "content": content,
                "scores": scores,
            }
        )
        versions.append(
            {
                "resource_type": "assessment",
                "resource_id": assessment_id,
                "version": 1,
                "action": "create",
                "recorded_at": recorded_at,
                "recorded_by": "bulk-loader",
                "reason": None,
                "entered_in_error": entered_in_error,
                "content": content,
                "scores": scores,
            }
        )
        if not entered_in_error:
            active_ids.append(str(assessment_id))
    assert len(active_ids) == count
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    with db.transaction() as session:
        session.execute(insert(Assessment), rows)
        session.execute(insert(RecordVersion), versions)
    return active_ids


def test_a_patient_with_10000_assessments_lists_and_pages_correctly(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    active = _bulk_insert(client, pid, 10_000, in_error=50)

    items = _list(client, pid, limit=200)
    ids = _ids(items)
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    assert set(ids) == set(active)
    order = [(i["assessed_on"], _utc(i["recorded_at"])) for i in items]
    assert order == sorted(order)
    assert all(i["status"] == "active" and i["scores"]["pasi"] == 28.7 for i in items)

    # A filtered window pages correctly too.
    window = _list(client, pid, limit=37, **{"from": "2000-03-01", "to": "2000-05-31"})
    expected = [i["id"] for i in items if "2000-03-01" <= i["assessed_on"] <= "2000-05-31"]
    assert _ids(window) == expected
    assert len(expected) > 37

    # A new assessment recorded now lands in its date's place among them.
    late = new_assessment(client, pid, "2000-02-01")
    after = _ids(_list(client, pid, limit=200, **{"from": "2000-02-01", "to": "2000-02-01"}))
    assert after[-1] == late["id"]
    assert len(after) == 1 + sum(1 for i in items if i["assessed_on"] == "2000-02-01")


# --- UTC timestamps whatever the database's time zone -----------------------------------------


def test_timestamps_are_utc_even_when_the_postgresql_time_zone_is_not(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if "postgresql" not in selected_backends(request.config.getoption("--db")):
        pytest.skip("PostgreSQL is not among the selected test databases")
    with empty_database("postgresql", tmp_path) as url:
        migrate(url)
        name = url.rsplit("/", 1)[-1]
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'")
        app = create_app(make_settings(url, tmp_path))
        with TestClient(app) as other:
            other.headers.update(bearer((tmp_path / "admin-api-key.txt").read_text().strip()))
            pid = new_patient(other)["id"]
            r = _post(other, pid, assessment_body("2020-01-01", iga=4))
            assert r.status_code == 201, r.text
            amended = _amend(other, r.json(), r.headers["ETag"], "IGA", iga=3)
            assert amended.status_code == 200, amended.text

            got = other.get(f"/v1/assessments/{r.json()['id']}").json()
            stamps = [got["recorded_at"], got["updated_at"]]
            stamps += [v["recorded_at"] for v in _history(other, r.json()["id"])]
            stamps += [i["recorded_at"] for i in _list(other, pid)]
            stamps.append(other.get(f"/v1/patients/{pid}").json()["created_at"])
            assert all(s.endswith("Z") for s in stamps), stamps
            assert got["recorded_at"] == r.json()["recorded_at"]


def test_the_example_pasi_is_the_default_body(client: TestClient) -> None:
    """Guards the helper other tests rely on: no `pasi_level` means PASI_EXAMPLE (28.7)."""
    assert assessment_body("2020-01-01")["pasi"] == PASI_EXAMPLE
    pid = new_patient(client)["id"]
    assert new_assessment(client, pid, "2020-01-01")["scores"]["pasi"] == 28.7
