"""Treatment courses: record, list, read with ETag, amend (If-Match), entered-in-error, history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import (
    bearer,
    create_api_key,
    error_locations,
    new_patient,
    new_treatment,
    problem,
    treatment_body,
    treatment_content,
)

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
CELLS = {"given_on": "2011-10-20", "amount": 1e6, "unit": "cells/kg"}


def _post(client: TestClient, patient_id: str, body: dict[str, Any]) -> Any:
    return client.post(f"/v1/patients/{patient_id}/treatments", json=body)


def _list(client: TestClient, patient_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/patients/{patient_id}/treatments")
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return list(r.json()["items"])


def _history(client: TestClient, treatment_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/treatments/{treatment_id}/history")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _amend(
    client: TestClient,
    treatment: dict[str, Any],
    etag: str | None,
    reason: str | None,
    **changes: Any,
) -> Any:
    body = {**treatment_content(treatment), **changes}
    if reason is not None:
        body["reason"] = reason
    headers = {} if etag is None else {"If-Match": etag}
    return client.put(f"/v1/treatments/{treatment['id']}", json=body, headers=headers)


def _delete(client: TestClient, treatment_id: str, **kw: Any) -> Any:
    return client.request("DELETE", f"/v1/treatments/{treatment_id}", **kw)


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


# --- create and read --------------------------------------------------------------------------


def test_recording_a_treatment_answers_201_with_location_etag_and_content(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    body = treatment_body(
        "2011-10-20", ended_on="2011-10-21", doses=[CELLS], notes="single infusion"
    )
    r = _post(client, pid, body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert r.headers["Location"] == f"/v1/treatments/{out['id']}"
    assert r.headers["ETag"] == '"1"'
    assert treatment_content(out) == body
    assert out["patient_id"] == pid
    assert out["version"] == 1
    assert out["status"] == "active"
    assert out["recorded_at"].endswith("Z")

    got = client.get(r.headers["Location"])
    assert got.status_code == 200, got.text
    assert got.headers["ETag"] == '"1"'
    assert got.json() == out


def test_ended_on_and_doses_are_optional(client: TestClient) -> None:
    out = new_treatment(client, new_patient(client)["id"], "2020-01-01")
    assert out["ended_on"] is None
    assert out["doses"] == []
    assert out["notes"] is None


@pytest.mark.parametrize("amount", [1e6, 2.5, 0.001, 1e15, 3])
def test_dose_amounts_round_trip_exactly(client: TestClient, amount: float) -> None:
    pid = new_patient(client)["id"]
    dose = {**CELLS, "amount": amount}
    created = new_treatment(client, pid, "2011-10-20", doses=[dose])
    assert created["doses"] == [dose]
    assert client.get(f"/v1/treatments/{created['id']}").json()["doses"] == [dose]
    assert _list(client, pid)[0]["doses"] == [dose]
    assert _history(client, created["id"])[0]["doses"] == [dose]


def test_a_million_cells_per_kg_is_stored_as_1e6(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_treatment(client, pid, "2011-10-20", doses=[CELLS])
    raw = client.get(f"/v1/treatments/{created['id']}").json()["doses"][0]
    assert raw["amount"] == 1_000_000
    assert raw["unit"] == "cells/kg"


@pytest.mark.parametrize(
    ("dose", "pointer"),
    [
        pytest.param({**CELLS, "amount": 0}, "/doses/0/amount", id="zero"),
        pytest.param({**CELLS, "amount": -1}, "/doses/0/amount", id="negative"),
        pytest.param({**CELLS, "amount": 1e16}, "/doses/0/amount", id="too-large"),
        pytest.param({**CELLS, "amount": "1e6"}, "/doses/0/amount", id="string"),
        pytest.param({**CELLS, "unit": ""}, "/doses/0/unit", id="no-unit"),
        pytest.param({**CELLS, "given_on": "2011-10-20T10:00:00"}, "/doses/0/given_on", id="dt"),
        pytest.param({"given_on": "2011-10-20", "unit": "mg"}, "/doses/0/amount", id="missing"),
        pytest.param({**CELLS, "route": "iv"}, "/doses/0/route", id="unknown-field"),
    ],
)
def test_invalid_doses_are_422(client: TestClient, dose: dict[str, Any], pointer: str) -> None:
    pid = new_patient(client)["id"]
    body = problem(_post(client, pid, treatment_body("2011-10-20", doses=[dose])), 422)
    assert pointer in error_locations(body)
    assert _list(client, pid) == []


def test_ended_on_before_started_on_is_422(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    problem(_post(client, pid, treatment_body("2020-03-01", ended_on="2020-02-29")), 422)
    assert _list(client, pid) == []


def test_ended_on_the_day_it_started_is_accepted(client: TestClient) -> None:
    out = new_treatment(client, new_patient(client)["id"], "2020-03-01", ended_on="2020-03-01")
    assert out["ended_on"] == "2020-03-01"


@pytest.mark.parametrize("field", ["started_on", "ended_on"])
def test_treatment_dates_follow_the_clinical_date_rules(client: TestClient, field: str) -> None:
    pid = new_patient(client)["id"]
    tomorrow_everywhere = datetime.now(timezone(timedelta(hours=14))).date() + timedelta(days=1)
    for bad in (tomorrow_everywhere.isoformat(), "1899-12-31", "2020-01-01T00:00:00", 20200101):
        body = treatment_body("1900-01-01")
        body[field] = bad
        answer = problem(_post(client, pid, body), 422)
        assert f"/{field}" in error_locations(answer)
    assert _list(client, pid) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"started_on": "2020-01-01"}, id="no-agent"),
        pytest.param({"agent": "", "started_on": "2020-01-01"}, id="empty-agent"),
        pytest.param({"agent": "x" * 201, "started_on": "2020-01-01"}, id="long-agent"),
        pytest.param({"agent": "MTX"}, id="no-start"),
        pytest.param(treatment_body("2020-01-01", dose="15 mg"), id="unknown-field"),
    ],
)
def test_invalid_treatment_bodies_are_422(client: TestClient, body: dict[str, Any]) -> None:
    pid = new_patient(client)["id"]
    problem(_post(client, pid, body), 422)
    assert _list(client, pid) == []


def test_unknown_patient_or_treatment_is_404(client: TestClient) -> None:
    problem(_post(client, UNKNOWN_ID, treatment_body("2020-01-01")), 404)
    problem(client.get(f"/v1/patients/{UNKNOWN_ID}/treatments"), 404)
    problem(client.get(f"/v1/treatments/{UNKNOWN_ID}"), 404)
    problem(client.get(f"/v1/treatments/{UNKNOWN_ID}/history"), 404)
    body = {**treatment_body("2020-01-01"), "reason": "x"}
    problem(client.put(f"/v1/treatments/{UNKNOWN_ID}", json=body, headers={"If-Match": '"1"'}), 404)
    problem(_delete(client, UNKNOWN_ID, params={"reason": "x"}), 404)


def test_a_treatment_id_that_is_not_a_uuid_is_422(client: TestClient) -> None:
    problem(client.get("/v1/treatments/infliximab"), 422)


# --- list -------------------------------------------------------------------------------------


def test_the_list_is_by_start_date_and_only_the_patients_own(client: TestClient) -> None:
    pid = new_patient(client, "S-1")["id"]
    other = new_patient(client, "S-2")["id"]
    later = new_treatment(client, pid, "2021-01-01", agent="adalimumab")
    earlier = new_treatment(client, pid, "2020-01-01", agent="methotrexate")
    new_treatment(client, other, "2019-01-01", agent="ciclosporin")
    assert _ids(_list(client, pid)) == [earlier["id"], later["id"]]


def test_an_empty_list_is_200_with_no_items(client: TestClient) -> None:
    assert _list(client, new_patient(client)["id"]) == []


# --- amend ------------------------------------------------------------------------------------


def test_amending_without_if_match_is_428(client: TestClient) -> None:
    created = new_treatment(client, new_patient(client)["id"], "2020-01-01")
    problem(_amend(client, created, None, "end date", ended_on="2020-06-01"), 428)
    assert client.get(f"/v1/treatments/{created['id']}").json() == created


@pytest.mark.parametrize("stale", ['"0"', '"2"', 'W/"1"', "garbage"])
def test_amending_with_a_stale_if_match_is_412(client: TestClient, stale: str) -> None:
    created = new_treatment(client, new_patient(client)["id"], "2020-01-01")
    problem(_amend(client, created, stale, "end date", ended_on="2020-06-01"), 412)
    assert client.get(f"/v1/treatments/{created['id']}").json() == created
    assert len(_history(client, created["id"])) == 1


def test_amending_with_the_etag_from_before_another_amendment_is_412(client: TestClient) -> None:
    created = new_treatment(client, new_patient(client)["id"], "2020-01-01")
    ok = _amend(client, created, '"1"', "end date", ended_on="2020-06-01")
    assert ok.status_code == 200, ok.text
    problem(_amend(client, created, '"1"', "end date", ended_on="2020-07-01"), 412)
    assert client.get(f"/v1/treatments/{created['id']}").json()["ended_on"] == "2020-06-01"


@pytest.mark.parametrize("reason", [None, ""])
def test_amending_without_a_reason_is_422(client: TestClient, reason: str | None) -> None:
    created = new_treatment(client, new_patient(client)["id"], "2020-01-01")
    answer = problem(_amend(client, created, '"1"', reason, ended_on="2020-06-01"), 422)
    assert "/reason" in error_locations(answer)
    assert len(_history(client, created["id"])) == 1


def test_amending_to_end_before_the_start_is_422(client: TestClient) -> None:
    created = new_treatment(client, new_patient(client)["id"], "2020-01-01")
    problem(_amend(client, created, '"1"', "end date", ended_on="2019-12-31"), 422)
    assert client.get(f"/v1/treatments/{created['id']}").json()["ended_on"] is None


def test_amending_answers_200_with_a_new_etag_and_history_keeps_both_versions(
    client: TestClient,
) -> None:
    pid = new_patient(client)["id"]
    created = new_treatment(client, pid, "2011-10-20", doses=[CELLS])
    name, token = create_api_key(client, "pharmacist")
    second_dose = {"given_on": "2011-11-20", "amount": 2e6, "unit": "cells/kg"}
    r = client.put(
        f"/v1/treatments/{created['id']}",
        json={
            **treatment_content(created),
            "ended_on": "2011-11-20",
            "doses": [CELLS, second_dose],
            "reason": "second infusion recorded late",
        },
        headers={"If-Match": '"1"', **bearer(token)},
    )
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"2"'
    out = r.json()
    assert out["version"] == 2
    assert out["ended_on"] == "2011-11-20"
    assert out["doses"] == [CELLS, second_dose]
    assert out["recorded_at"] == created["recorded_at"]
    got = client.get(f"/v1/treatments/{created['id']}")
    assert got.headers["ETag"] == '"2"'
    assert got.json() == out

    first, second = _history(client, created["id"])
    assert (first["version"], first["action"], first["reason"]) == (1, "create", None)
    assert first["recorded_by"] == "bootstrap-admin"
    assert treatment_content(first) == treatment_content(created)
    assert (second["version"], second["action"]) == (2, "amend")
    assert second["reason"] == "second infusion recorded late"
    assert second["recorded_by"] == name
    assert treatment_content(second) == treatment_content(out)
    now = datetime.now(UTC)
    for version in (first, second):
        assert version["recorded_at"].endswith("Z")
        assert datetime.fromisoformat(version["recorded_at"]) <= now
    assert datetime.fromisoformat(first["recorded_at"]) <= datetime.fromisoformat(
        second["recorded_at"]
    )


# --- entered-in-error -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["query", "body"])
def test_deleting_marks_entered_in_error_and_keeps_it_readable(
    client: TestClient, where: str
) -> None:
    pid = new_patient(client)["id"]
    kept = new_treatment(client, pid, "2020-01-01", agent="methotrexate")
    gone = new_treatment(client, pid, "2020-02-01", agent="adalimumab", doses=[CELLS])
    reason = "wrong patient"
    kw: dict[str, Any] = (
        {"params": {"reason": reason}} if where == "query" else {"json": {"reason": reason}}
    )
    r = _delete(client, gone["id"], **kw)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "entered-in-error"
    assert r.headers["ETag"] == '"2"'

    assert _ids(_list(client, pid)) == [kept["id"]]
    got = client.get(f"/v1/treatments/{gone['id']}").json()
    assert got["status"] == "entered-in-error"
    assert treatment_content(got) == treatment_content(gone)

    first, second = _history(client, gone["id"])
    assert first["status"] == "active"
    assert second["action"] == "entered-in-error"
    assert second["status"] == "entered-in-error"
    assert second["reason"] == reason
    assert treatment_content(second) == treatment_content(gone)


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({}, id="no-reason"),
        pytest.param({"params": {"reason": ""}}, id="empty-query-reason"),
        pytest.param({"json": {}}, id="body-without-reason"),
    ],
)
def test_deleting_without_a_reason_is_422(client: TestClient, kw: dict[str, Any]) -> None:
    pid = new_patient(client)["id"]
    created = new_treatment(client, pid, "2020-01-01")
    problem(_delete(client, created["id"], **kw), 422)
    assert _ids(_list(client, pid)) == [created["id"]]


def test_deleting_with_a_stale_if_match_is_412(client: TestClient) -> None:
    pid = new_patient(client)["id"]
    created = new_treatment(client, pid, "2020-01-01")
    problem(
        _delete(client, created["id"], params={"reason": "dup"}, headers={"If-Match": '"5"'}), 412
    )
    assert _ids(_list(client, pid)) == [created["id"]]


def test_amending_an_entered_in_error_treatment_is_409(client: TestClient) -> None:
    created = new_treatment(client, new_patient(client)["id"], "2020-01-01")
    r = _delete(client, created["id"], params={"reason": "duplicate"})
    assert r.status_code == 200, r.text
    problem(_amend(client, created, r.headers["ETag"], "end", ended_on="2020-02-01"), 409)
    got = client.get(f"/v1/treatments/{created['id']}").json()
    assert got["status"] == "entered-in-error"
    assert got["ended_on"] is None
    assert len(_history(client, created["id"])) == 2
