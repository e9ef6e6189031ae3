"""A batch writes runs of items that need only inserts together (`services.batch._gather`):
each item must still get exactly the answer, the stored record and the audit events it gets
when items run one by one, and a database refusal of the grouped write (a key or identifier
taken by a concurrent request since the batch read them) must fall back to one by one."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db.database import Database
from app.services import audit, batch
from tests.api.helpers import identifier, new_patient
from tests.api.test_batch_api import _item
from tests.conftest import _empty_tables

URL = "/v1/assessments:batch"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _db(client: TestClient) -> Database:
    db: Database = client.app.state.runtime.db  # type: ignore[attr-defined]
    return db


def _mixed_batch(existing: str) -> list[dict[str, Any]]:
    """Items of every kind, grouped ones between ones that must run alone."""
    new = {"identifier": identifier("S-NEW"), "create": {"birth_year": 1970}}
    return [
        _item({"id": existing}, "2021-01-01", key="k1"),  # grouped
        _item({"identifier": identifier("S-OLD")}, "2021-01-02"),  # grouped, by identifier
        _item(new, "2021-01-03", key="k3"),  # grouped, creates the patient
        _item(new, "2021-01-04"),  # grouped, the patient created just before
        _item({"id": existing}, "2021-01-05", key="k1"),  # same key, other body: alone, 422
        _item({"id": existing}, "2021-01-01", key="k1"),  # same key and body: alone, replay
        _item({"id": existing}, "2021-01-06", is_baseline=True),  # a baseline flag: alone
        _item({"id": existing}, "2021-01-07", is_baseline=True),  # a second one: alone, 409
        _item({"identifier": identifier("S-NONE")}, "2021-01-08"),  # unknown: alone, 404
        _item({"identifier": identifier("S-NEW2"), "create": {}}, "2021-01-09", key="k10"),
        _item({"id": existing}, "2021-01-10", iga=9),  # invalid: refused before any write
        _item({"id": existing}, "2021-01-11"),  # grouped again after the ones alone
    ]


def _run(client: TestClient) -> dict[str, Any]:
    """Post the mixed batch on an emptied database and describe what a user sees, with ids
    replaced by their order of appearance (two runs make different ids)."""
    _empty_tables(client)
    existing = new_patient(client, "S-OLD")["id"]
    r = client.post(URL, json={"mode": "per_item", "items": _mixed_batch(existing)})
    assert r.status_code == 200, r.text
    labels: dict[str, str] = {}

    def label(value: str | None) -> str | None:
        return None if value is None else labels.setdefault(value, f"#{len(labels)}")

    label(existing)
    results = []
    for x in r.json()["results"]:
        problem = x.get("problem") or {}
        results.append(
            (
                x["status"],
                label(x.get("patient_id")),
                label(x.get("assessment_id")),
                x.get("replayed"),
                problem.get("type"),
                UUID.sub(lambda m: str(label(m.group())), problem.get("detail") or ""),
            )
        )
    stored = []
    for x in r.json()["results"]:
        if x["status"] == 201:
            got = client.get(f"/v1/assessments/{x['assessment_id']}").json()
            stored.append({k: v for k, v in got.items() if k not in ("id", "patient_id")})
            history = client.get(f"/v1/assessments/{x['assessment_id']}/history").json()
            stored.append([(v["version"], v["action"]) for v in history["items"]])
    events = client.get("/v1/audit-events", params={"limit": 200}).json()["items"]
    trail = [
        (
            e["action"],
            e["status"],
            e["resource_type"],
            label(e["resource_id"]),
            sorted(str(label(p)) for p in e["patient_ids"]),
        )
        for e in sorted(events, key=lambda e: e["id"])
        if e["route"] == URL
    ]
    with _db(client).read() as session:
        checked, broken = audit.verify_chain(session)
    assert broken is None
    patients = client.get("/v1/patients", params={"limit": 200}).json()["items"]
    return {
        "results": results,
        "stored": [_without_times(s) for s in stored],
        "trail": trail,
        "patients": sorted(
            (p["identifiers"][0]["value"], p["birth_year"], label(p["id"])) for p in patients
        ),
        "events": checked,
    }


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("recorded_at", "updated_at", "etag")}
    return value


def test_grouped_items_get_what_they_get_one_by_one(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    grouped = _run(client)
    statuses = [r[0] for r in grouped["results"]]
    assert statuses == [201, 201, 201, 201, 422, 201, 201, 409, 404, 201, 422, 201]
    assert grouped["results"][5][3] is True  # the replay
    with monkeypatch.context() as m:
        m.setattr(batch, "_gather", lambda *args: False)  # every item alone
        alone = _run(client)
    for name in grouped:
        assert grouped[name] == alone[name], name


def test_an_identifier_taken_since_the_batch_read_falls_back_to_one_by_one(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = new_patient(client, "S-TAKEN")["id"]
    monkeypatch.setattr(batch, "holders_of", lambda *args: {})  # a stale read: "nobody holds it"
    items = [
        _item({"identifier": identifier("S-FRESH"), "create": {}}, "2021-01-01"),
        _item({"identifier": identifier("S-TAKEN"), "create": {}}, "2021-01-02"),
        _item({"identifier": identifier("S-TAKEN"), "create": {}}, "2021-01-03"),
    ]
    r = client.post(URL, json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 201, 201]
    assert results[1]["patient_id"] == results[2]["patient_id"] == holder
    fresh = client.get(
        "/v1/patients", params={"identifier": identifier("S-FRESH")["system"] + "|S-FRESH"}
    )
    assert [p["id"] for p in fresh.json()["items"]] == [results[0]["patient_id"]]
    events = client.get("/v1/audit-events", params={"limit": 200}).json()["items"]
    mine = [(e["action"], e["status"]) for e in events if e["route"] == URL]
    assert sorted(mine) == sorted(
        [("create-patient", 201)] + [("create-assessment", 201)] * 3 + [("batch-assessments", 200)]
    )
    with _db(client).read() as session:
        assert audit.verify_chain(session)[1] is None


def test_a_key_used_since_the_batch_read_replays_instead_of_storing_twice(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = new_patient(client, "S-1")["id"]
    first = client.post(URL, json={"items": [_item({"id": pid}, "2021-01-01", key="K")]})
    assert first.status_code == 200, first.text
    monkeypatch.setattr(batch.idempotency, "used_keys", lambda *args: set())  # a stale read
    again = client.post(
        URL,
        json={
            "items": [
                _item({"id": pid}, "2021-01-02", key="OTHER"),
                _item({"id": pid}, "2021-01-01", key="K"),
            ]
        },
    )
    assert again.status_code == 200, again.text
    one, two = again.json()["results"]
    assert (one["status"], one["replayed"]) == (201, False)
    assert (two["status"], two["replayed"]) == (201, True)
    assert two["assessment_id"] == first.json()["results"][0]["assessment_id"]
    listed = client.get(f"/v1/patients/{pid}/assessments", params={"limit": 200}).json()
    assert len(listed["items"]) == 2


def test_a_thousand_items_keep_one_linear_chain_with_an_event_each(client: TestClient) -> None:
    items = [
        _item(
            {"identifier": identifier(f"S-{n % 50}"), "create": {}},
            f"2021-{1 + n // 28 % 12:02d}-{1 + n % 28:02d}",
            key=f"S-{n}",
        )
        for n in range(1000)
    ]
    r = client.post(URL, json={"items": items})
    assert r.status_code == 200, r.text
    assert {x["status"] for x in r.json()["results"]} == {201}
    with _db(client).read() as session:
        checked, broken = audit.verify_chain(session)
    assert broken is None
    # 50 patients (one event each with their creating item), 1,000 items, 1 batch, plus the
    # setup's nothing: every event of the batch is in the chain once.
    assert checked == 50 + 1000 + 1
