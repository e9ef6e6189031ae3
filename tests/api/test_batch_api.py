"""SPEC 7, batch upload: per-item and all-or-nothing modes, per-item idempotency keys, per-item
audit, organizations scoping an item's patient."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from tests.api.helpers import (
    TRIAL_SYSTEM,
    assessment_body,
    bearer,
    identifier,
    new_patient,
    problem,
)

URL = "/v1/assessments:batch"


def _item(
    patient: dict[str, Any], day: str, key: str | None = None, **extra: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {"patient": patient, "assessment": assessment_body(day, **extra)}
    if key is not None:
        item["key"] = key
    return item


def _count(client: TestClient, patient_id: str) -> int:
    r = client.get(f"/v1/patients/{patient_id}/assessments", params={"limit": 200})
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


def _events(client: TestClient, **filters: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/audit-events", params={"limit": 200, **filters})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_per_item_mixes_valid_and_invalid_items_in_input_order(client: TestClient) -> None:
    pid = new_patient(client, "S-1")["id"]
    bad_pasi = assessment_body("2021-01-02")
    bad_pasi["pasi"]["trunk"]["erythema"] = 9
    r = client.post(
        URL,
        json={
            "mode": "per_item",
            "items": [
                _item({"id": pid}, "2021-01-01"),
                {"patient": {"id": pid}, "assessment": bad_pasi},
                _item({"id": str(uuid.uuid4())}, "2021-01-03"),
                _item({"identifier": identifier("S-NEW"), "create": {"sex": "male"}}, "2021-01-04"),
                _item({"identifier": identifier("S-NOPE")}, "2021-01-05"),
                _item({"id": pid, "identifier": identifier("S-1")}, "2021-01-06"),
            ],
        },
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == list(range(6))
    assert [x["status"] for x in results] == [201, 422, 404, 201, 404, 422]
    assert results[0]["patient_id"] == pid
    assert results[0]["replayed"] is False
    pointers = {e["pointer"] for e in results[1]["problem"]["errors"]}
    assert "/items/1/assessment/pasi/trunk/erythema" in pointers
    assert all(
        p.startswith("/items/5/patient")
        for e in results[5]["problem"]["errors"]
        for p in [e["pointer"]]
    )
    assert _count(client, pid) == 1
    created = results[3]["patient_id"]
    found = client.get("/v1/patients", params={"identifier": f"{TRIAL_SYSTEM}|S-NEW"}).json()
    assert [p["id"] for p in found["items"]] == [created]
    assert _count(client, created) == 1
    got = client.get(f"/v1/assessments/{results[0]['assessment_id']}")
    assert got.status_code == 200
    assert got.json()["scores"]["pasi"] == 28.7


def test_all_or_nothing_stores_nothing_when_one_item_is_invalid(client: TestClient) -> None:
    pid = new_patient(client, "S-1")["id"]
    bad = assessment_body("2021-01-02")
    del bad["pasi"]["head_neck"]
    r = client.post(
        URL,
        json={
            "mode": "all_or_nothing",
            "items": [
                _item({"id": pid}, "2021-01-01", key="k-1"),
                _item({"identifier": identifier("S-2"), "create": {}}, "2021-01-01"),
                {"patient": {"id": pid}, "assessment": bad, "key": "k-2"},
            ],
        },
    )
    body = problem(r, 422)
    assert [x["index"] for x in body["results"]] == [2]
    assert "/items/2/assessment/pasi/head_neck" in {e["pointer"] for e in body["errors"]}
    assert _count(client, pid) == 0
    assert (
        client.get("/v1/patients", params={"identifier": f"{TRIAL_SYSTEM}|S-2"}).json()["items"]
        == []
    )
    # The claims were released: the same keys with a fixed batch now store it.
    fixed = client.post(
        URL,
        json={
            "mode": "all_or_nothing",
            "items": [
                _item({"id": pid}, "2021-01-01", key="k-1"),
                _item({"id": pid}, "2021-01-02", key="k-2"),
            ],
        },
    )
    assert fixed.status_code == 200, fixed.text
    assert [x["status"] for x in fixed.json()["results"]] == [201, 201]
    assert _count(client, pid) == 2


def test_all_or_nothing_rolls_back_a_database_conflict(client: TestClient) -> None:
    pid = new_patient(client, "S-1")["id"]
    r = client.post(
        URL,
        json={
            "mode": "all_or_nothing",
            "items": [
                _item({"id": pid}, "2021-01-01", is_baseline=True),
                _item({"id": pid}, "2021-01-02", is_baseline=True),
            ],
        },
    )
    body = problem(r, 422)
    assert [(x["index"], x["status"]) for x in body["results"]] == [(1, 409)]
    assert _count(client, pid) == 0


def test_replaying_a_whole_batch_stores_nothing_new_and_marks_every_item(
    client: TestClient,
) -> None:
    pid = new_patient(client, "S-1")["id"]
    batch = {
        "items": [
            _item({"id": pid}, "2021-01-01", key="S-1/Baseline"),
            _item({"identifier": identifier("S-9"), "create": {}}, "2021-01-02", key="S-9/W12"),
        ]
    }
    first = client.post(URL, json=batch)
    assert first.status_code == 200, first.text
    again = client.post(URL, json=batch)
    assert again.status_code == 200, again.text
    one, two = first.json()["results"], again.json()["results"]
    assert all(x["replayed"] is False for x in one)
    assert all(x["replayed"] is True for x in two)
    assert [(x["assessment_id"], x["patient_id"]) for x in one] == [
        (x["assessment_id"], x["patient_id"]) for x in two
    ]
    assert _count(client, pid) == 1
    assert _count(client, one[1]["patient_id"]) == 1
    found = client.get("/v1/patients", params={"identifier": f"{TRIAL_SYSTEM}|S-9"}).json()
    assert len(found["items"]) == 1
    # Same key, another body: that item is refused, as a single POST would be.
    changed = {"items": [_item({"id": pid}, "2021-02-01", key="S-1/Baseline")]}
    assert client.post(URL, json=changed).json()["results"][0]["status"] == 422


def test_another_organizations_patient_fails_like_an_unknown_one(client: TestClient) -> None:
    orgs = [client.post("/v1/organizations", json={"name": n}).json()["id"] for n in "AB"]
    keys = []
    for org in orgs:
        r = client.post(
            "/v1/api-keys",
            json={"name": f"k-{org[:8]}", "scopes": ["read", "write"], "organizations": [org]},
        )
        assert r.status_code == 201, r.text
        keys.append(bearer(r.json()["key"]))
    theirs = client.post(
        "/v1/patients", json={"identifiers": [identifier("S-B")]}, headers=keys[1]
    ).json()["id"]
    r = client.post(
        URL,
        json={
            "items": [
                _item({"id": theirs}, "2021-01-01"),
                _item({"id": str(uuid.uuid4())}, "2021-01-01"),
                _item({"identifier": identifier("S-B")}, "2021-01-01"),
            ]
        },
        headers=keys[0],
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [404, 404, 404]
    foreign, unknown = results[0]["problem"], results[1]["problem"]
    assert foreign["type"] == unknown["type"]
    assert foreign["title"] == unknown["title"]
    assert _count(client, theirs) == 0


def test_every_item_leaves_its_own_audit_event(client: TestClient) -> None:
    pid = new_patient(client, "S-1")["id"]
    r = client.post(
        URL,
        json={
            "items": [
                _item({"id": pid}, "2021-01-01"),
                _item({"id": pid}, "2021-01-02", iga=9),
                _item({"identifier": identifier("S-3"), "create": {}}, "2021-01-03"),
            ]
        },
    )
    results = r.json()["results"]
    events = _events(client, action="create-assessment")
    mine = [e for e in events if e["route"] == URL]
    assert sorted(e["status"] for e in mine) == [201, 201, 422]
    ok = {e["resource_id"]: e for e in mine if e["status"] == 201}
    assert set(ok) == {results[0]["assessment_id"], results[2]["assessment_id"]}
    assert ok[results[0]["assessment_id"]]["patient_ids"] == [pid]
    created = [e for e in _events(client, action="create-patient") if e["route"] == URL]
    assert [e["patient_ids"] for e in created] == [[results[2]["patient_id"]]]
    batch = _events(client, action="batch-assessments")[0]
    assert set(batch["patient_ids"]) == {pid, results[2]["patient_id"]}


def test_an_oversized_or_empty_batch_is_refused_whole(client: TestClient) -> None:
    pid = new_patient(client, "S-1")["id"]
    item = _item({"id": pid}, "2021-01-01")
    problem(client.post(URL, json={"items": []}), 422)
    problem(client.post(URL, json={"items": [item] * 1001}), 422)


def test_a_batch_costs_one_rate_limit_token_per_started_ten_items(client: TestClient) -> None:
    from datetime import date, timedelta

    from app.auth.guards import RateLimiter

    pid = new_patient(client, "S-1")["id"]
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    saved = runtime.rate_limiter
    runtime.rate_limiter = RateLimiter(10)
    try:
        for n in range(2):  # 50 items: 5 tokens each, of the 10 a minute
            start = date(2021, 1, 1) + timedelta(days=100 * n)
            days = [(start + timedelta(days=d)).isoformat() for d in range(50)]
            items = [_item({"id": pid}, day) for day in days]
            assert client.post(URL, json={"items": items}).status_code == 200
        r = client.post(URL, json={"items": items[:1]})
        assert r.status_code == 429, r.text
        assert "Retry-After" in r.headers
    finally:
        runtime.rate_limiter = saved
