"""SPEC 6, "Audit, complete": every request to an audited route leaves an event whatever its
outcome, naming the key (id and name), the action, the status, the organization and every
patient it touched; "who saw or changed patient X" is answered by `?patient_id=X` alone.

The audited routes are read from the app (each carries its action), so a new route cannot
escape these tests: one without a request below fails them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.api.context import audit_action_of
from app.main import create_app
from app.services import audit
from tests.api.helpers import (
    TRIAL_SYSTEM,
    amend_body,
    assessment_body,
    bearer,
    new_assessment,
    new_treatment,
    patient_body,
    treatment_body,
)


def _audited_routes() -> list[tuple[str, str, str]]:
    from fastapi.routing import iter_route_contexts

    routes = []
    for context in iter_route_contexts(create_app().routes):
        route = context.original_route
        if isinstance(route, APIRoute) and (action := audit_action_of(route)):
            for method in sorted(context.methods or ()):
                routes.append((method, str(context.path), action))
    return routes


AUDITED = _audited_routes()


@dataclass
class World:
    """One patient with an assessment and a treatment, and a clinic key of its organization."""

    client: TestClient
    patient: dict[str, Any]
    assessment: dict[str, Any]
    treatment: dict[str, Any]
    clinic: dict[str, str]
    clinic_key_id: str
    organization_id: str


def _key(client: TestClient, scopes: list[str]) -> tuple[str, dict[str, str]]:
    r = client.post(
        "/v1/api-keys", json={"name": f"clinic-{uuid.uuid4().hex[:8]}", "scopes": scopes}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], bearer(r.json()["key"])


@pytest.fixture
def world(client: TestClient) -> World:
    key_id, clinic = _key(client, ["read", "write"])
    r = client.post("/v1/patients", json=patient_body("S-1"), headers=clinic)
    assert r.status_code == 201, r.text
    patient = r.json()
    pid = patient["id"]
    return World(
        client,
        patient,
        new_assessment(client, pid, "2020-01-06", headers=clinic),
        new_treatment(client, pid, "2020-01-06"),
        clinic,
        key_id,
        patient["organization_id"],
    )


# (method, path) -> how to make that request succeed: (method, url, request kwargs, patients it
# touches). Admin routes run with the admin key, the rest with the clinic key.
Request = tuple[str, str, dict[str, Any], list[str]]
SUCCEEDING: dict[tuple[str, str], Callable[[World], Request]] = {
    ("POST", "/v1/patients"): lambda w: ("POST", "/v1/patients", {"json": patient_body("S-2")}, []),
    ("GET", "/v1/patients"): lambda w: ("GET", "/v1/patients", {}, [w.patient["id"]]),
    ("GET", "/v1/patients/{patient_id}"): lambda w: (
        "GET",
        f"/v1/patients/{w.patient['id']}",
        {},
        [w.patient["id"]],
    ),
    ("POST", "/v1/patients/{patient_id}/assessments"): lambda w: (
        "POST",
        f"/v1/patients/{w.patient['id']}/assessments",
        {"json": assessment_body("2020-03-02")},
        [w.patient["id"]],
    ),
    ("GET", "/v1/patients/{patient_id}/assessments"): lambda w: (
        "GET",
        f"/v1/patients/{w.patient['id']}/assessments",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/v1/assessments/{assessment_id}"): lambda w: (
        "GET",
        f"/v1/assessments/{w.assessment['id']}",
        {},
        [w.patient["id"]],
    ),
    ("PUT", "/v1/assessments/{assessment_id}"): lambda w: (
        "PUT",
        f"/v1/assessments/{w.assessment['id']}",
        {"json": amend_body(w.assessment, "IGA corrected", iga=3), "headers": {"If-Match": '"1"'}},
        [w.patient["id"]],
    ),
    ("DELETE", "/v1/assessments/{assessment_id}"): lambda w: (
        "DELETE",
        f"/v1/assessments/{w.assessment['id']}",
        {"params": {"reason": "recorded for the wrong patient"}},
        [w.patient["id"]],
    ),
    ("GET", "/v1/assessments/{assessment_id}/history"): lambda w: (
        "GET",
        f"/v1/assessments/{w.assessment['id']}/history",
        {},
        [w.patient["id"]],
    ),
    ("POST", "/v1/patients/{patient_id}/treatments"): lambda w: (
        "POST",
        f"/v1/patients/{w.patient['id']}/treatments",
        {"json": treatment_body("2021-01-04")},
        [w.patient["id"]],
    ),
    ("GET", "/v1/patients/{patient_id}/treatments"): lambda w: (
        "GET",
        f"/v1/patients/{w.patient['id']}/treatments",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/v1/treatments/{treatment_id}"): lambda w: (
        "GET",
        f"/v1/treatments/{w.treatment['id']}",
        {},
        [w.patient["id"]],
    ),
    ("PUT", "/v1/treatments/{treatment_id}"): lambda w: (
        "PUT",
        f"/v1/treatments/{w.treatment['id']}",
        {
            "json": {**treatment_body("2020-01-06"), "notes": "dose corrected", "reason": "typo"},
            "headers": {"If-Match": '"1"'},
        },
        [w.patient["id"]],
    ),
    ("DELETE", "/v1/treatments/{treatment_id}"): lambda w: (
        "DELETE",
        f"/v1/treatments/{w.treatment['id']}",
        {"params": {"reason": "never given"}},
        [w.patient["id"]],
    ),
    ("GET", "/v1/treatments/{treatment_id}/history"): lambda w: (
        "GET",
        f"/v1/treatments/{w.treatment['id']}/history",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/v1/patients/{patient_id}/outcomes"): lambda w: (
        "GET",
        f"/v1/patients/{w.patient['id']}/outcomes",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/v1/patients/{patient_id}/chart.svg"): lambda w: (
        "GET",
        f"/v1/patients/{w.patient['id']}/chart.svg",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/v1/patients/{patient_id}/chart.png"): lambda w: (
        "GET",
        f"/v1/patients/{w.patient['id']}/chart.png",
        {"params": {"width": 800, "height": 500}},
        [w.patient["id"]],
    ),
    ("GET", "/v1/cohorts/responses"): lambda w: (
        "GET",
        "/v1/cohorts/responses",
        {"params": {"targets": "pasi75,pasi90", "imputation": "nri"}},
        [w.patient["id"]],
    ),
    ("GET", "/v1/cohorts/time-to-event"): lambda w: (
        "GET",
        "/v1/cohorts/time-to-event",
        {"params": {"event": "clearance"}},
        [w.patient["id"]],
    ),
    ("GET", "/v1/cohorts/time-to-event.svg"): lambda w: (
        "GET",
        "/v1/cohorts/time-to-event.svg",
        {"params": {"event": "clearance"}},
        [w.patient["id"]],
    ),
    ("POST", "/v1/organizations"): lambda w: (
        "POST",
        "/v1/organizations",
        {"json": {"name": f"Study {uuid.uuid4().hex[:6]}"}},
        [],
    ),
    ("GET", "/v1/organizations"): lambda w: ("GET", "/v1/organizations", {}, []),
    ("POST", "/v1/api-keys"): lambda w: (
        "POST",
        "/v1/api-keys",
        {"json": {"name": f"k-{uuid.uuid4().hex[:8]}", "scopes": ["read"]}},
        [],
    ),
    ("GET", "/v1/api-keys"): lambda w: ("GET", "/v1/api-keys", {}, []),
    ("DELETE", "/v1/api-keys/{key_id}"): lambda w: (
        "DELETE",
        f"/v1/api-keys/{_key(w.client, ['read'])[0]}",
        {},
        [],
    ),
    ("POST", "/v1/assessments:batch"): lambda w: (
        "POST",
        "/v1/assessments:batch",
        {
            "json": {
                "items": [
                    {
                        "patient": {"id": w.patient["id"]},
                        "assessment": assessment_body("2020-04-06"),
                    }
                ]
            }
        },
        [w.patient["id"]],
    ),
    ("GET", "/v1/exports/assessments.csv"): lambda w: (
        "GET",
        "/v1/exports/assessments.csv",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/v1/exports/sdtm-rs.csv"): lambda w: (
        "GET",
        "/v1/exports/sdtm-rs.csv",
        {"params": {"studyid": "T-1", "identifier_system": TRIAL_SYSTEM}},
        [w.patient["id"]],
    ),
    ("GET", "/v1/exports/sdtm-rs.json"): lambda w: (
        "GET",
        "/v1/exports/sdtm-rs.json",
        {"params": {"studyid": "T-1", "identifier_system": TRIAL_SYSTEM}},
        [w.patient["id"]],
    ),
    ("GET", "/v1/audit-events"): lambda w: (
        "GET",
        "/v1/audit-events",
        {"params": {"patient_id": w.patient["id"]}},
        [w.patient["id"]],
    ),
    ("GET", "/fhir/Patient/{patient_id}"): lambda w: (
        "GET",
        f"/fhir/Patient/{w.patient['id']}",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/fhir/Patient"): lambda w: (
        "GET",
        "/fhir/Patient",
        {"params": {"identifier": f"{TRIAL_SYSTEM}|S-1"}},
        [w.patient["id"]],
    ),
    ("GET", "/fhir/Observation/{assessment_id}"): lambda w: (
        "GET",
        f"/fhir/Observation/{w.assessment['id']}",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/fhir/Observation/{assessment_id}/_history"): lambda w: (
        "GET",
        f"/fhir/Observation/{w.assessment['id']}/_history",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/fhir/Observation/{assessment_id}/_history/{version_id}"): lambda w: (
        "GET",
        f"/fhir/Observation/{w.assessment['id']}/_history/1",
        {},
        [w.patient["id"]],
    ),
    ("GET", "/fhir/Observation"): lambda w: (
        "GET",
        "/fhir/Observation",
        {"params": {"patient": w.patient["id"]}},
        [w.patient["id"]],
    ),
    ("POST", "/fhir/Observation"): lambda w: (
        "POST",
        "/fhir/Observation",
        {"json": w.client.get(f"/fhir/Observation/{w.assessment['id']}").json()},
        [w.patient["id"]],
    ),
}
ADMIN_PREFIXES = ("/v1/organizations", "/v1/api-keys", "/v1/audit-events")


def _events(client: TestClient, **filters: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/audit-events", params={"limit": 200, **filters})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _last(client: TestClient, action: str) -> dict[str, Any]:
    events = _events(client, action=action)
    assert events, f"no {action} event"
    return events[-1]


def _admin_key_id(client: TestClient) -> str:
    keys = client.get("/v1/api-keys").json()["items"]
    return str(next(k["id"] for k in keys if k["name"] == "bootstrap-admin"))


def test_every_audited_route_has_a_request_here() -> None:
    missing = {(m, p) for m, p, _a in AUDITED} - set(SUCCEEDING)
    assert not missing, f"audited routes without a request in SUCCEEDING: {sorted(missing)}"
    assert len(AUDITED) >= 22


@pytest.mark.parametrize(
    ("method", "path", "action"), AUDITED, ids=[f"{m} {p}" for m, p, _ in AUDITED]
)
def test_a_successful_request_leaves_an_event_naming_key_patients_status_and_organization(
    world: World, method: str, path: str, action: str
) -> None:
    client = world.client
    admin = path.startswith(ADMIN_PREFIXES)
    verb, url, kwargs, touched = SUCCEEDING[(method, path)](world)
    headers = {**kwargs.pop("headers", {}), **({} if admin else world.clinic)}
    r = client.request(verb, url, headers=headers, **kwargs)
    assert r.status_code < 300, r.text
    event = _last(client, action)
    assert event["status"] == r.status_code
    assert event["method"] == method
    assert event["route"] == path
    assert event["key_id"] == (_admin_key_id(client) if admin else world.clinic_key_id)
    assert set(touched) <= set(event["patient_ids"])
    if touched:
        assert event["organization_id"] == world.organization_id
    if method == "POST" and path == "/v1/patients":
        assert event["patient_ids"] == [r.json()["id"]]


ID_ROUTES = [(m, p, a) for m, p, a in AUDITED if "{" in p]


@pytest.mark.parametrize(
    ("method", "path", "action"), ID_ROUTES, ids=[f"{m} {p}" for m, p, _ in ID_ROUTES]
)
def test_a_404_leaves_an_event_with_the_id_that_was_asked_for(
    world: World, method: str, path: str, action: str
) -> None:
    client = world.client
    admin = path.startswith(ADMIN_PREFIXES)
    verb, url, kwargs, _touched = SUCCEEDING[(method, path)](world)
    unknown = str(uuid.uuid4())
    url = "/".join(unknown if _is_uuid(part) else part for part in url.split("/"))
    headers = {**kwargs.pop("headers", {}), **({} if admin else world.clinic)}
    r = client.request(verb, url, headers=headers, **kwargs)
    assert r.status_code == 404, r.text
    event = _last(client, action)
    assert event["status"] == 404
    assert event["key_id"] == (_admin_key_id(client) if admin else world.clinic_key_id)
    asked = event["patient_id"] if "{patient_id}" in path else event["resource_id"]
    assert asked == unknown


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def test_refusals_403_409_412_422_and_428_are_audited_with_the_patient(world: World) -> None:
    client, pid, aid = world.client, world.patient["id"], world.assessment["id"]
    read_only_id, read_only = _key(client, ["read"])
    outcomes = [
        (
            client.post(
                f"/v1/patients/{pid}/assessments",
                json=assessment_body("2020-02-03"),
                headers=read_only,
            ),
            403,
            "create-assessment",
            read_only_id,
        ),
        (
            client.post(
                "/v1/patients",
                json=patient_body(world.patient["identifiers"][0]["value"]),
                headers=world.clinic,
            ),
            409,
            "create-patient",
            world.clinic_key_id,
        ),
        (
            client.put(
                f"/v1/assessments/{aid}",
                json=amend_body(world.assessment, "late"),
                headers={**world.clinic, "If-Match": '"7"'},
            ),
            412,
            "amend-assessment",
            world.clinic_key_id,
        ),
        (
            client.post(
                f"/v1/patients/{pid}/assessments",
                json=assessment_body("2020-02-03", iga=9),
                headers=world.clinic,
            ),
            422,
            "create-assessment",
            world.clinic_key_id,
        ),
        (
            client.put(
                f"/v1/assessments/{aid}",
                json=amend_body(world.assessment, "no etag"),
                headers=world.clinic,
            ),
            428,
            "amend-assessment",
            world.clinic_key_id,
        ),
    ]
    for response, status, action, key_id in outcomes:
        assert response.status_code == status, response.text
        matching = [
            e for e in _events(client, action=action, key_id=key_id) if e["status"] == status
        ]
        assert matching, f"no {status} {action} event"
        if action != "create-patient":  # a refused create has no patient yet
            assert matching[-1]["patient_id"] == pid
    # All of them answer "who tried to change patient X".
    statuses = {e["status"] for e in _events(client, patient_id=pid)}
    assert {403, 412, 422, 428} <= statuses


def test_a_probe_of_another_organizations_record_is_audited_against_that_patient(
    world: World,
) -> None:
    client = world.client
    org_b = client.post("/v1/organizations", json={"name": "Clinic B"}).json()["id"]
    r = client.post(
        "/v1/api-keys",
        json={
            "name": f"b-{uuid.uuid4().hex[:6]}",
            "scopes": ["read", "write"],
            "organizations": [org_b],
        },
    )
    b_key_id, b = r.json()["id"], bearer(r.json()["key"])
    r = client.get(f"/v1/assessments/{world.assessment['id']}", headers=b)
    assert r.status_code == 404
    (event,) = [
        e for e in _events(client, patient_id=world.patient["id"]) if e["key_id"] == b_key_id
    ]
    assert (event["action"], event["status"]) == ("read-assessment", 404)
    assert event["resource_id"] == world.assessment["id"]


def test_a_search_that_returned_patient_x_is_found_by_patient_id(world: World) -> None:
    client, pid = world.client, world.patient["id"]
    identifier = world.patient["identifiers"][0]
    r = client.get(
        "/v1/patients",
        params={"identifier": f"{identifier['system']}|{identifier['value']}"},
        headers=world.clinic,
    )
    assert [p["id"] for p in r.json()["items"]] == [pid]
    client.get("/v1/patients", params={"identifier": "urn:x|nobody"}, headers=world.clinic)
    actions = [e["action"] for e in _events(client, patient_id=pid)]
    assert "search-patients" in actions
    empty = [e for e in _events(client, action="search-patients") if not e["patient_ids"]]
    assert len(empty) == 1  # the search that found nobody touches nobody


def test_a_refusal_that_cannot_be_audited_fails_with_500(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def audit_is_down(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit, "record_events", audit_is_down)
    r = world.client.get(f"/v1/patients/{uuid.uuid4()}", headers=world.clinic)
    assert r.status_code == 500
