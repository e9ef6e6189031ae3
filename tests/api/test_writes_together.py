"""Concurrent requests recording new assessments are written together by the writer
(`services.assessments.record_together`, `group_commit.Together`): one access check, one insert
per table and one audit append for several requests. Each request must still get exactly what
it gets alone: its own answer, its record with its history entry and exactly one audit event,
and a request that cannot be written (a patient it may not reach) fails alone, as it would."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.db.database import Database
from app.services import assessments, audit
from tests.api.helpers import assessment_body, new_patient
from tests.api.test_organizations import as_key, new_tenant

REQUESTS = 24


def _db(client: TestClient) -> Database:
    db: Database = client.app.state.runtime.db  # type: ignore[attr-defined]
    return db


def _post_while_the_writer_is_held(
    posts: list[tuple[TestClient, str, dict[str, Any]]],
    client: TestClient,
    keys: list[str] | None = None,
) -> list[httpx.Response]:
    """Send `posts` (with `keys` as their Idempotency-Keys) at once while a write transaction
    holds the writer, so that they all queue behind it (and are done together) instead of one
    by one as they arrive."""
    headers = [{} if keys is None else {"Idempotency-Key": k} for k in keys or [""] * len(posts)]
    db = _db(client)
    held = threading.Event()

    def hold() -> None:
        with db.transaction():
            held.set()
            time.sleep(0.4)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    with ThreadPoolExecutor(len(posts)) as pool:
        answers = list(
            pool.map(
                lambda ph: ph[0][0].post(ph[0][1], json=ph[0][2], headers=ph[1]),
                zip(posts, headers, strict=True),
            )
        )
    holder.join(10)
    return answers


def _events(client: TestClient, **filters: str) -> list[dict[str, Any]]:
    r = client.get("/v1/audit-events", params={"limit": 200, **filters})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_concurrent_new_assessments_are_written_together_and_each_as_alone(
    client: TestClient,
) -> None:
    a, b = new_tenant(client, "clinic-a"), new_tenant(client, "study-b")
    as_a, as_b = as_key(client, a.token), as_key(client, b.token)
    mine = [new_patient(as_a, f"A-{i}")["id"] for i in range(3)]
    theirs = new_patient(as_b, "B-1")["id"]
    nobody = str(uuid.uuid4())
    plan: list[tuple[TestClient, str, dict[str, Any]]] = []
    for i in range(REQUESTS):
        pid = {5: theirs, 11: nobody, 17: theirs}.get(i, mine[i % 3])
        body = assessment_body(f"2021-01-{i + 1:02d}", visit=f"V{i}", notes=f"note {i}")
        plan.append((as_a, f"/v1/patients/{pid}/assessments", body))
    stats = _db(client).writer.stats  # type: ignore[union-attr]
    together_before = stats.together

    answers = _post_while_the_writer_is_held(plan, client)

    refused = {5, 11, 17}
    for i, r in enumerate(answers):
        if i in refused:  # another organization's patient answers like an unknown one
            assert r.status_code == 404, r.text
        else:
            assert r.status_code == 201, r.text
    assert stats.together - together_before >= 2  # written together, not one by one
    created = {i: r.json() for i, r in enumerate(answers) if i not in refused}
    for i, body in created.items():
        assert body["visit"] == f"V{i}"
        assert body["notes"] == f"note {i}"
        assert answers[i].headers["Location"] == f"/v1/assessments/{body['id']}"
        assert answers[i].headers["ETag"] == '"1"'
        stored = as_a.get(f"/v1/assessments/{body['id']}")
        assert stored.json() == body  # the answer is exactly what was stored
        history = as_a.get(f"/v1/assessments/{body['id']}/history").json()["items"]
        assert [(v["version"], v["action"]) for v in history] == [(1, "create")]
        events = _events(client, action="create-assessment", patient_id=body["patient_id"])
        mine_only = [e for e in events if e["resource_id"] == body["id"]]
        assert len(mine_only) == 1
        assert mine_only[0]["status"] == 201
        assert mine_only[0]["organization_id"] == a.id
    for pid in mine:
        listed = as_a.get(f"/v1/patients/{pid}/assessments", params={"limit": 200}).json()
        assert {x["id"] for x in listed["items"]} == {
            body["id"] for body in created.values() if body["patient_id"] == pid
        }
    assert as_b.get(f"/v1/patients/{theirs}/assessments").json()["items"] == []
    refusals = [e for e in _events(client, action="create-assessment") if e["status"] == 404]
    assert sorted(str(e["patient_id"]) for e in refusals) == sorted([theirs, theirs, nobody])
    with _db(client).read() as session:
        _count, broken = audit.verify_chain(session)
    assert broken is None


def test_a_failed_shared_write_falls_back_to_each_request_alone(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement of the shared write failing (here: the insert) rolls it back whole; each
    request then runs alone and gets its own answer, stored once."""
    pid = new_patient(client, "S-1")["id"]
    stats = _db(client).writer.stats  # type: ignore[union-attr]
    together_before = stats.together

    def fails(*_args: Any) -> None:
        raise RuntimeError("the shared insert failed")

    monkeypatch.setattr(assessments, "insert_assessments", fails)
    plan = [
        (client, f"/v1/patients/{pid}/assessments", assessment_body(f"2021-02-{i + 1:02d}"))
        for i in range(8)
    ]
    answers = _post_while_the_writer_is_held(plan, client)
    assert [r.status_code for r in answers] == [201] * 8
    assert stats.together == together_before
    listed = client.get(f"/v1/patients/{pid}/assessments").json()["items"]
    assert sorted(x["id"] for x in listed) == sorted(r.json()["id"] for r in answers)


def test_requests_with_keys_are_written_together_and_replay_as_alone(
    client: TestClient,
) -> None:
    """Each new key is stored with its answer in the shared write; a key already used (before,
    or by an earlier request of the same burst) leaves its request to run alone: a replay of
    the same body, 422 for another body."""
    pid = new_patient(client, "S-1")["id"]
    url = f"/v1/patients/{pid}/assessments"
    used = client.post(url, json=assessment_body("2021-03-01"), headers={"Idempotency-Key": "u"})
    assert used.status_code == 201, used.text
    stats = _db(client).writer.stats  # type: ignore[union-attr]
    together_before = stats.together
    keys = [f"k{i}" for i in range(12)] + ["k3", "u"]
    bodies = [assessment_body(f"2021-04-{i + 1:02d}") for i in range(12)]
    bodies += [bodies[3], assessment_body("2021-05-01")]  # k3 again, same body; u, another

    answers = _post_while_the_writer_is_held([(client, url, b) for b in bodies], client, keys)

    assert [r.status_code for r in answers] == [201] * 13 + [422]
    assert stats.together - together_before >= 2
    first, again = answers[3], answers[12]
    assert again.json() == first.json()  # one assessment for the key, whichever came first
    assert {first.headers.get("Idempotent-Replayed"), again.headers.get("Idempotent-Replayed")} == {
        None,
        "true",
    }
    listed = client.get(url, params={"limit": 200}).json()["items"]
    assert len(listed) == 13  # "u" before, and 12 new keys
    for key, body, r in zip(keys[:12], bodies[:12], answers[:12], strict=True):
        retry = client.post(url, json=body, headers={"Idempotency-Key": key})
        assert retry.status_code == 201
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json() == r.json()
        assert retry.headers["ETag"] == r.headers["ETag"]
        assert retry.headers["Location"] == r.headers["Location"]
