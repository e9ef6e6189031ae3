"""The audit trail: every read and write of patient data appends an event in the request's own
transaction (so no audit, no answer), versions record who wrote them, and logs carry no PHI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.schemas.scores import PASI_EXAMPLE
from app.services import audit
from tests.conftest import make_settings
from tests.sql_events import statements

PROBLEM_JSON = "application/problem+json"
SYSTEM = "https://hospital.example/mrn"
ASSESSMENT = {"assessed_on": "2020-01-06", "visit": "Baseline", "pasi": PASI_EXAMPLE, "iga": 4}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _new_key(client: TestClient, name: str, scopes: list[str]) -> tuple[str, str]:
    """(unique name, token) of a new key; names get a suffix since keys outlive each test."""
    unique = f"{name}-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/api-keys", json={"name": unique, "scopes": scopes})
    assert r.status_code == 201, r.text
    return unique, str(r.json()["key"])


def _patient_body(value: str | None = None) -> dict[str, Any]:
    return {"identifiers": [{"system": SYSTEM, "value": value or f"MRN-{uuid.uuid4().hex}"}]}


def _events(client: TestClient, **filters: Any) -> list[dict[str, Any]]:
    """The trail, less the test's own reads of it (reading the audit is an event too: see
    `test_reading_the_audit_trail_is_itself_audited`)."""
    r = client.get("/v1/audit-events", params={"limit": 200, **filters})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return [e for e in items if e["action"] != "read-audit-events"]


def _summary(event: dict[str, Any]) -> tuple[Any, ...]:
    return (
        event["key_name"],
        event["action"],
        event["method"],
        event["route"],
        event["patient_id"],
        event["resource_type"],
        event["resource_id"],
        event["status"],
    )


@pytest.fixture
def clinic(client: TestClient) -> tuple[str, dict[str, str]]:
    """A read+write key: its name and its Authorization header."""
    name, token = _new_key(client, "clinic-a", ["read", "write"])
    return name, _auth(token)


# --------------------------------------------------------------------------- the trail


def test_reads_and_writes_of_patient_data_append_audit_events(
    client: TestClient, clinic: tuple[str, dict[str, str]]
) -> None:
    name, auth = clinic
    r = client.post("/v1/patients", json=_patient_body(), headers=auth)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert client.get(f"/v1/patients/{pid}", headers=auth).status_code == 200
    r = client.post(f"/v1/patients/{pid}/assessments", json=ASSESSMENT, headers=auth)
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    r = client.get(f"/v1/assessments/{aid}", headers=auth)
    assert r.status_code == 200
    r = client.put(
        f"/v1/assessments/{aid}",
        json={**ASSESSMENT, "iga": 3, "reason": "IGA transcribed wrongly"},
        headers={**auth, "If-Match": r.headers["ETag"]},
    )
    assert r.status_code == 200, r.text
    assert client.get(f"/v1/patients/{pid}/assessments", headers=auth).status_code == 200
    assert client.get(f"/v1/patients/{pid}/outcomes", headers=auth).status_code == 200
    assert client.get(f"/v1/assessments/{aid}/history", headers=auth).status_code == 200
    r = client.delete(f"/v1/assessments/{aid}", params={"reason": "wrong patient"}, headers=auth)
    assert r.status_code == 200, r.text

    events = _events(client, patient_id=pid)

    patient_route = "/v1/patients/{patient_id}"
    assessment_route = "/v1/assessments/{assessment_id}"
    assert [_summary(e) for e in events] == [
        (name, "create-patient", "POST", "/v1/patients", pid, "patient", pid, 201),
        (name, "read-patient", "GET", patient_route, pid, "patient", pid, 200),
        (
            name,
            "create-assessment",
            "POST",
            f"{patient_route}/assessments",
            pid,
            "assessment",
            aid,
            201,
        ),
        (name, "read-assessment", "GET", assessment_route, pid, "assessment", aid, 200),
        (name, "amend-assessment", "PUT", assessment_route, pid, "assessment", aid, 200),
        (name, "list-assessments", "GET", f"{patient_route}/assessments", pid, "patient", pid, 200),
        (name, "read-outcomes", "GET", f"{patient_route}/outcomes", pid, "patient", pid, 200),
        (
            name,
            "read-assessment-history",
            "GET",
            f"{assessment_route}/history",
            pid,
            "assessment",
            aid,
            200,
        ),
        (
            name,
            "enter-in-error-assessment",
            "DELETE",
            assessment_route,
            pid,
            "assessment",
            aid,
            200,
        ),
    ]
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    assert all(t.endswith(("Z", "+00:00")) for t in times)


def test_treatment_reads_and_writes_are_audited(
    client: TestClient, clinic: tuple[str, dict[str, str]]
) -> None:
    name, auth = clinic
    pid = client.post("/v1/patients", json=_patient_body(), headers=auth).json()["id"]
    r = client.post(
        f"/v1/patients/{pid}/treatments",
        json={"agent": "UC-MSC infusion", "started_on": "2020-01-06"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert client.get(f"/v1/treatments/{tid}", headers=auth).status_code == 200
    assert client.get(f"/v1/patients/{pid}/treatments", headers=auth).status_code == 200

    events = [(e["action"], e["resource_id"]) for e in _events(client, patient_id=pid)]
    assert events == [
        ("create-patient", pid),
        ("create-treatment", tid),
        ("read-treatment", tid),
        ("list-treatments", pid),
    ]
    assert {e["key_name"] for e in _events(client, patient_id=pid)} == {name}


def test_a_patient_search_is_audited_without_a_patient(
    client: TestClient, clinic: tuple[str, dict[str, str]]
) -> None:
    name, auth = clinic
    r = client.get("/v1/patients", params={"identifier": f"{SYSTEM}|nobody"}, headers=auth)
    assert r.status_code == 200
    (event,) = _events(client, action="search-patients")
    assert event["key_name"] == name
    assert event["patient_id"] is None
    assert event["status"] == 200


def test_audit_events_filter_by_patient_action_and_key(client: TestClient) -> None:
    name_a, token_a = _new_key(client, "clinic-a", ["read", "write"])
    name_b, token_b = _new_key(client, "clinic-b", ["read", "write"])
    pid_a = client.post("/v1/patients", json=_patient_body(), headers=_auth(token_a)).json()["id"]
    pid_b = client.post("/v1/patients", json=_patient_body(), headers=_auth(token_b)).json()["id"]
    client.get(f"/v1/patients/{pid_a}", headers=_auth(token_b))
    client.get(f"/v1/patients/{pid_b}", headers=_auth(token_b))

    by_patient = _events(client, patient_id=pid_a)
    assert [(e["key_name"], e["action"]) for e in by_patient] == [
        (name_a, "create-patient"),
        (name_b, "read-patient"),
    ]
    by_action = _events(client, action="read-patient")
    assert [e["patient_id"] for e in by_action] == [pid_a, pid_b]
    by_key = _events(client, key_name=name_a)
    assert [(e["action"], e["patient_id"]) for e in by_key] == [("create-patient", pid_a)]
    combined = _events(client, key_name=name_b, patient_id=pid_a)
    assert [e["action"] for e in combined] == ["read-patient"]
    assert _events(client, key_name="nobody-at-all") == []


def test_audit_events_are_paginated(client: TestClient) -> None:
    pid = client.post("/v1/patients", json=_patient_body()).json()["id"]
    for _ in range(4):
        client.get(f"/v1/patients/{pid}")
    page = {"patient_id": pid, "action": "read-patient", "limit": 3}
    r = client.get("/v1/audit-events", params={**page, "limit": 3})
    first = r.json()
    assert len(first["items"]) == 3
    assert first["next_cursor"]
    r = client.get("/v1/audit-events", params={**page, "cursor": first["next_cursor"]})
    second = r.json()
    assert len(second["items"]) == 1
    assert second["next_cursor"] is None
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert len(set(ids)) == 4


def test_only_admin_keys_read_the_audit_trail(
    client: TestClient, clinic: tuple[str, dict[str, str]]
) -> None:
    _name, auth = clinic
    r = client.get("/v1/audit-events", headers=auth)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)


def test_reading_the_audit_trail_is_itself_audited(client: TestClient) -> None:
    """SPEC 6: reading the audit trail is an event; read for one patient, it touches that
    patient (so "who looked into X's trail" is answerable too)."""
    pid = client.post("/v1/patients", json=_patient_body()).json()["id"]
    client.get("/v1/audit-events")
    client.get("/v1/audit-events", params={"patient_id": pid})
    r = client.get("/v1/audit-events", params={"action": "read-audit-events"})
    reads = r.json()["items"]
    assert [(e["patient_id"], e["patient_ids"], e["status"]) for e in reads] == [
        (None, [], 200),
        (pid, [pid], 200),
    ]
    assert [e["action"] for e in _events(client)] == ["create-patient"]


# --------------------------------------------------------------------------- who wrote it


def test_versions_record_the_name_of_the_key_that_wrote_them(client: TestClient) -> None:
    name_a, token_a = _new_key(client, "clinic-a", ["read", "write"])
    name_b, token_b = _new_key(client, "clinic-b", ["read", "write"])
    r = client.post("/v1/patients", json=_patient_body(), headers=_auth(token_a))
    assert r.json()["created_by"] == name_a
    pid = r.json()["id"]
    r = client.post(f"/v1/patients/{pid}/assessments", json=ASSESSMENT, headers=_auth(token_a))
    aid = r.json()["id"]
    r = client.put(
        f"/v1/assessments/{aid}",
        json={**ASSESSMENT, "iga": 3, "reason": "IGA transcribed wrongly"},
        headers={**_auth(token_b), "If-Match": r.headers["ETag"]},
    )
    assert r.status_code == 200, r.text
    r = client.delete(
        f"/v1/assessments/{aid}", params={"reason": "wrong patient"}, headers=_auth(token_a)
    )
    assert r.status_code == 200, r.text

    r = client.get(f"/v1/assessments/{aid}/history")
    assert r.status_code == 200, r.text
    versions = [
        (v["version"], v["action"], v["recorded_by"], v["reason"], v["iga"])
        for v in r.json()["items"]
    ]
    assert versions == [
        (1, "create", name_a, None, 4),
        (2, "amend", name_b, "IGA transcribed wrongly", 3),
        (3, "entered-in-error", name_a, "wrong patient", 3),
    ]


def test_treatment_versions_record_the_writing_key(client: TestClient) -> None:
    name_a, token_a = _new_key(client, "clinic-a", ["read", "write"])
    pid = client.post("/v1/patients", json=_patient_body()).json()["id"]
    r = client.post(
        f"/v1/patients/{pid}/treatments",
        json={"agent": "UC-MSC infusion", "started_on": "2020-01-06"},
        headers=_auth(token_a),
    )
    assert r.status_code == 201, r.text
    r = client.get(f"/v1/treatments/{r.json()['id']}/history")
    assert [v["recorded_by"] for v in r.json()["items"]] == [name_a]


# --------------------------------------------------------------------------- no audit, no answer


def _audit_is_down(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("audit store unavailable")


@pytest.fixture
def fragile(database_url: str, data_dir: Path, admin_key: str) -> Iterator[TestClient]:
    """An app instance on the test database that answers unexpected errors with 500 (as a
    server would) instead of raising them into the test."""
    app = create_app(make_settings(database_url, data_dir))
    with TestClient(app, raise_server_exceptions=False) as instance:
        instance.headers["Authorization"] = f"Bearer {admin_key}"
        yield instance


def _assert_500(r: Any) -> None:
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.json()["status"] == 500


def test_a_read_fails_when_its_audit_event_cannot_be_written(
    client: TestClient, fragile: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"MRN-{uuid.uuid4().hex}"
    pid = client.post("/v1/patients", json=_patient_body(value)).json()["id"]
    aid = client.post(f"/v1/patients/{pid}/assessments", json=ASSESSMENT).json()["id"]
    monkeypatch.setattr(audit, "record_events", _audit_is_down)

    for path in (
        f"/v1/patients/{pid}",
        f"/v1/patients?identifier={SYSTEM}|{value}",
        f"/v1/patients/{pid}/assessments",
        f"/v1/patients/{pid}/outcomes",
        f"/v1/assessments/{aid}",
    ):
        r = fragile.get(path)
        _assert_500(r)
        assert value not in r.text
        assert "scores" not in r.text


def test_a_write_stores_nothing_when_its_audit_event_cannot_be_written(
    client: TestClient, fragile: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = client.post("/v1/patients", json=_patient_body()).json()["id"]
    value = f"MRN-{uuid.uuid4().hex}"
    with monkeypatch.context() as patched:
        patched.setattr(audit, "record_events", _audit_is_down)
        _assert_500(fragile.post("/v1/patients", json=_patient_body(value)))
        _assert_500(fragile.post(f"/v1/patients/{pid}/assessments", json=ASSESSMENT))
        _assert_500(
            fragile.post(
                f"/v1/patients/{pid}/treatments",
                json={"agent": "UC-MSC infusion", "started_on": "2020-01-06"},
            )
        )

    r = client.get("/v1/patients", params={"identifier": f"{SYSTEM}|{value}"})
    assert r.json()["items"] == []
    assert [p["id"] for p in client.get("/v1/patients").json()["items"]] == [pid]
    assert client.get(f"/v1/patients/{pid}/assessments").json()["items"] == []
    assert client.get(f"/v1/patients/{pid}/treatments").json()["items"] == []
    assert [e["action"] for e in _events(client) if e["action"].startswith("create")] == [
        "create-patient"
    ]


def test_an_amendment_is_not_kept_when_its_audit_event_cannot_be_written(
    client: TestClient, fragile: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = client.post("/v1/patients", json=_patient_body()).json()["id"]
    r = client.post(f"/v1/patients/{pid}/assessments", json=ASSESSMENT)
    aid, etag = r.json()["id"], r.headers["ETag"]
    with monkeypatch.context() as patched:
        patched.setattr(audit, "record_events", _audit_is_down)
        _assert_500(
            fragile.put(
                f"/v1/assessments/{aid}",
                json={**ASSESSMENT, "iga": 3, "reason": "typo"},
                headers={"If-Match": etag},
            )
        )
        _assert_500(fragile.delete(f"/v1/assessments/{aid}", params={"reason": "typo"}))

    r = client.get(f"/v1/assessments/{aid}")
    assert r.json()["version"] == 1
    assert r.json()["iga"] == 4
    assert r.json()["status"] == "active"
    assert len(client.get(f"/v1/assessments/{aid}/history").json()["items"]) == 1


def test_an_idempotent_retry_after_an_audit_failure_is_processed_anew(
    client: TestClient, fragile: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _patient_body()
    headers = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    with monkeypatch.context() as patched:
        patched.setattr(audit, "record_events", _audit_is_down)
        _assert_500(fragile.post("/v1/patients", json=body, headers=headers))

    r = fragile.post("/v1/patients", json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers.get("Idempotent-Replayed") is None
    assert [e["action"] for e in _events(client)] == ["create-patient"]


# --------------------------------------------------------------------------- no PHI in logs


CLIENT_LOGGERS = ("httpx", "httpcore")  # the test client's own request logs, not the service's


def _service_log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        if record.name.startswith(CLIENT_LOGGERS):
            continue
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
    return "\n".join(parts)


def test_no_identifier_values_appear_in_logs_during_a_create_read_cycle(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    value = f"MRN-{uuid.uuid4().hex}"
    second = f"NHS-{uuid.uuid4().hex}"
    body = {"identifiers": [{"system": SYSTEM, "value": value}, {"system": "nhs", "value": second}]}

    r = client.post("/v1/patients", json=body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert client.post("/v1/patients", json=body).status_code == 409
    assert client.get("/v1/patients", params={"identifier": f"{SYSTEM}|{value}"}).json()["items"]
    assert client.get(f"/v1/patients/{pid}").status_code == 200
    assert client.get("/v1/patients").status_code == 200
    assert client.post(f"/v1/patients/{pid}/assessments", json=ASSESSMENT).status_code == 201
    assert client.get(f"/v1/patients/{pid}/outcomes").status_code == 200
    bad = {"identifiers": [{"system": SYSTEM, "value": value, "extra": 1}]}
    assert client.post("/v1/patients", json=bad).status_code == 422

    logged = _service_log_text(caplog)
    assert value not in logged
    assert second not in logged


def test_a_database_error_while_storing_a_patient_does_not_log_its_identifier(
    fragile: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # A NUL character is valid JSON but PostgreSQL text cannot hold it: the database refuses
    # the statement. Whatever the service answers, the identifier must not reach the logs.
    caplog.set_level(logging.DEBUG)
    marker = f"MRN-{uuid.uuid4().hex}"
    r = fragile.post("/v1/patients", json=_patient_body(f"{marker}\u0000"))
    assert r.status_code != 500 or r.headers["content-type"].startswith(PROBLEM_JSON)
    assert marker not in _service_log_text(caplog)


def test_an_idempotent_replay_is_audited_like_the_first_request(client: TestClient) -> None:
    r = client.post("/v1/patients", json={"identifiers": [{"system": "urn:t", "value": "rp-1"}]})
    patient_id = r.json()["id"]
    body = {"assessed_on": "2020-01-01", "pasi": PASI_EXAMPLE}
    headers = {"Idempotency-Key": "replay-audit-1"}
    first = client.post(f"/v1/patients/{patient_id}/assessments", json=body, headers=headers)
    again = client.post(f"/v1/patients/{patient_id}/assessments", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"

    events = client.get("/v1/audit-events", params={"patient_id": patient_id}).json()["items"]
    actions = [(e["action"], e["resource_id"], e["status"]) for e in events]
    assessment_id = first.json()["id"]
    assert ("create-assessment", assessment_id, 201) in actions
    assert ("replay-create-assessment", assessment_id, 201) in actions


def test_a_reads_event_names_the_organization_its_access_check_read_without_a_lookup(
    client: TestClient,
) -> None:
    """A read's audit event is written in a transaction of its own, after the read: it names
    the organization that the read's access check found (carried over), instead of looking the
    patient up again."""
    pid = client.post("/v1/patients", json=_patient_body()).json()["id"]
    created = client.post(
        f"/v1/patients/{pid}/assessments",
        json={"assessed_on": "2024-01-01", "pasi": PASI_EXAMPLE},
    )
    assert created.status_code == 201, created.text
    engine = client.app.state.runtime.db.engine  # type: ignore[attr-defined]
    with statements(engine, lambda sql: "organization_id" in sql and " IN (" in sql) as lookups:
        read = client.get(f"/v1/assessments/{created.json()['id']}")
    assert read.status_code == 200, read.text
    assert lookups == []
    [read_event] = _events(client, action="read-assessment")
    assert read_event["organization_id"] is not None
    [write_event] = _events(client, action="create-assessment")
    assert read_event["organization_id"] == write_event["organization_id"]


def test_an_event_about_one_patient_is_one_insert_on_postgresql(client: TestClient) -> None:
    """While the chain's lock is held, every round trip counts: on PostgreSQL an event and its
    patient link are one statement (SQLite, in-process, takes two)."""
    pid = client.post("/v1/patients", json=_patient_body()).json()["id"]
    engine = client.app.state.runtime.db.engine  # type: ignore[attr-defined]
    with statements(engine, lambda sql: "INSERT INTO audit_event" in sql) as inserts:
        created = client.post(
            f"/v1/patients/{pid}/assessments",
            json={"assessed_on": "2024-01-01", "pasi": PASI_EXAMPLE},
        )
    assert created.status_code == 201, created.text
    assert len(inserts) == (2 if engine.dialect.name == "sqlite" else 1)
    [stored] = _events(client, action="create-assessment", patient_id=pid)
    assert stored["organization_id"] is not None
    with client.app.state.runtime.db.read() as session:  # type: ignore[attr-defined]
        _checked, broken = audit.verify_chain(session)
    assert broken is None
