"""The FHIR R4 facade (`/fhir`), on both databases: everything served conforms (HL7's JSON
schema, fhir.resources' R4B models, the bindings), round trips, status and versions, searches
and paging, OperationOutcome errors, organization scoping."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from app.formats.fhir import CODE_SYSTEM_URL
from tests.api.helpers import (
    TRIAL_SYSTEM,
    amend_body,
    bearer,
    new_assessment,
    new_patient,
)
from tests.api.test_organizations import new_tenant
from tests.unit.test_fhir_mapping import (
    FhirSchema,
    _accepting_fhir_4_0_1,
    conforms,
    hl7_schema,  # noqa: F401  (the session fixture that fetches HL7's schema)
)

FHIR_JSON = "application/fhir+json"
PASI_CODE = f"{CODE_SYSTEM_URL}|pasi"


@pytest.fixture(scope="session")
def fhir_schema(request: pytest.FixtureRequest) -> FhirSchema:
    """HL7's R4 schema with the mapping tests' one 4.0.1 patch."""
    return FhirSchema(_accepting_fhir_4_0_1(request.getfixturevalue("hl7_schema")))


def served(response: httpx.Response, fhir_schema: FhirSchema, status: int = 200) -> dict[str, Any]:
    """Assert a FHIR answer with `status` that conforms; return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
    body: dict[str, Any] = response.json()
    conforms(fhir_schema, body)
    for entry in body.get("entry", []):
        conforms(fhir_schema, entry["resource"])
    return body


def outcome(response: httpx.Response, fhir_schema: FhirSchema, status: int) -> dict[str, Any]:
    body = served(response, fhir_schema, status)
    assert body["resourceType"] == "OperationOutcome"
    return body


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


@pytest.fixture
def patient(client: TestClient) -> dict[str, Any]:
    return new_patient(client, "S-F1", sex="female", birth_year=1975)


def test_metadata_is_public_and_conforms(client: TestClient, fhir_schema: FhirSchema) -> None:
    r = client.get("/fhir/metadata", headers={"Authorization": ""})
    body = served(r, fhir_schema)
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"


def test_code_system(client: TestClient, fhir_schema: FhirSchema) -> None:
    body = served(client.get("/fhir/CodeSystem/psoriasis-severity"), fhir_schema)
    assert body["url"] == CODE_SYSTEM_URL
    outcome(client.get("/fhir/CodeSystem/loinc"), fhir_schema, 404)


def test_patient_read_and_search(
    client: TestClient, fhir_schema: FhirSchema, patient: dict[str, Any]
) -> None:
    body = served(client.get(f"/fhir/Patient/{patient['id']}"), fhir_schema)
    assert body["gender"] == "female"
    assert body["birthDate"] == "1975"
    assert body["identifier"] == [{"system": TRIAL_SYSTEM, "value": "S-F1"}]
    assert body["managingOrganization"]["reference"] == f"Organization/{patient['organization_id']}"
    found = served(
        client.get("/fhir/Patient", params={"identifier": f"{TRIAL_SYSTEM}|S-F1"}), fhir_schema
    )
    assert found["type"] == "searchset"
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["id"] == patient["id"]
    none = served(
        client.get("/fhir/Patient", params={"identifier": f"{TRIAL_SYSTEM}|nope"}), fhir_schema
    )
    assert none["total"] == 0


def test_round_trip_gives_the_same_scores(
    client: TestClient, fhir_schema: FhirSchema, patient: dict[str, Any]
) -> None:
    dlqi = {f"item{n}": 1 for n in range(1, 11) if n != 7} | {
        "item7_prevented": False,
        "item7_problem": 2,
    }
    original = new_assessment(
        client,
        patient["id"],
        "2021-03-01",
        visit="Week 4",
        assessor="Dr A",
        iga=3,
        bsa_percent=12.5,
        dlqi=dlqi,
        notes="stable",
    )
    obs = served(client.get(f"/fhir/Observation/{original['id']}"), fhir_schema)
    assert obs["status"] == "final"
    assert obs["meta"]["versionId"] == "1"
    assert obs["subject"]["reference"] == f"Patient/{patient['id']}"
    assert len(obs["code"]["coding"]) == 1
    r = client.post(
        "/fhir/Observation",
        content=httpx.Request("POST", "/", json=obs).content,
        headers={"Content-Type": FHIR_JSON},
    )
    created = served(r, fhir_schema, 201)
    assert r.headers["Location"] == f"/fhir/Observation/{created['id']}/_history/1"
    again = client.get(f"/v1/assessments/{created['id']}").json()
    assert again["scores"] == original["scores"]
    for name in ("visit", "assessor", "iga", "bsa_percent", "dlqi", "notes", "assessed_on"):
        assert again[name] == original[name]


def test_create_takes_plain_json_and_idempotency_keys(
    client: TestClient, fhir_schema: FhirSchema, patient: dict[str, Any]
) -> None:
    a = new_assessment(client, patient["id"], "2021-03-01")
    obs = client.get(f"/fhir/Observation/{a['id']}").json()
    headers = {"Idempotency-Key": "fhir-create-1"}
    first = client.post("/fhir/Observation", json=obs, headers=headers)
    served(first, fhir_schema, 201)
    replay = client.post("/fhir/Observation", json=obs, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["content-type"].startswith(FHIR_JSON)
    listed = client.get(f"/v1/patients/{patient['id']}/assessments").json()["items"]
    assert len(listed) == 2


def test_amended_and_entered_in_error_versions(
    client: TestClient, fhir_schema: FhirSchema, patient: dict[str, Any]
) -> None:
    a = new_assessment(client, patient["id"], "2021-03-01", iga=2)
    r = client.put(
        f"/v1/assessments/{a['id']}",
        json=amend_body(a, "IGA corrected", iga=3),
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    amended = served(client.get(f"/fhir/Observation/{a['id']}"), fhir_schema)
    assert amended["status"] == "amended"
    assert amended["meta"]["versionId"] == "2"
    first = served(client.get(f"/fhir/Observation/{a['id']}/_history/1"), fhir_schema)
    assert first["status"] == "final"
    assert first["meta"]["versionId"] == "1"
    outcome(client.get(f"/fhir/Observation/{a['id']}/_history/9"), fhir_schema, 404)
    r = client.delete(f"/v1/assessments/{a['id']}", params={"reason": "wrong patient"})
    assert r.status_code == 200, r.text
    gone = served(client.get(f"/fhir/Observation/{a['id']}"), fhir_schema)
    assert gone["status"] == "entered-in-error"
    assert gone["meta"]["versionId"] == "3"
    history = served(client.get(f"/fhir/Observation/{a['id']}/_history"), fhir_schema)
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert [e["resource"]["status"] for e in history["entry"]] == [
        "entered-in-error",
        "amended",
        "final",
    ]
    # Entered-in-error records leave searches, as they leave v1 lists.
    found = served(client.get("/fhir/Observation", params={"patient": patient["id"]}), fhir_schema)
    assert found["total"] == 0


def test_searches_and_paging(
    client: TestClient, fhir_schema: FhirSchema, patient: dict[str, Any]
) -> None:
    days = ["2021-01-04", "2021-02-01", "2021-03-01", "2021-04-05", "2021-05-03"]
    ids = [new_assessment(client, patient["id"], d)["id"] for d in days]
    other = new_patient(client, "S-F2")
    new_assessment(client, other["id"], "2021-01-04")

    def search(**params: Any) -> dict[str, Any]:
        return served(client.get("/fhir/Observation", params=params), fhir_schema)

    assert search(patient=patient["id"])["total"] == 5
    assert search(subject=f"Patient/{patient['id']}")["total"] == 5
    assert search(code=PASI_CODE, patient=patient["id"])["total"] == 5
    assert search(code="pasi", patient=patient["id"])["total"] == 5
    assert search(code="http://loinc.org|8277-6", patient=patient["id"])["total"] == 0
    assert search()["total"] == 6
    window = search(patient=patient["id"], date=["ge2021-02-01", "le2021-04-05"])
    assert window["total"] == 3
    assert [e["resource"]["id"] for e in window["entry"]] == ids[1:4]

    page = search(patient=patient["id"], _count=2)
    seen: list[str] = []
    while True:
        assert page["total"] == 5
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = served(client.get(_path(following[0])), fhir_schema)
    assert seen == ids


def test_errors_are_operation_outcomes_with_expressions(
    client: TestClient, fhir_schema: FhirSchema, patient: dict[str, Any]
) -> None:
    a = new_assessment(client, patient["id"], "2021-03-01")
    obs = client.get(f"/fhir/Observation/{a['id']}").json()
    # A range the request model enforces: its JSON pointer comes back as a FHIRPath.
    bad = {**obs, "component": [dict(c) for c in obs["component"]]}
    bad["component"][0] = {**bad["component"][0], "valueInteger": 9}
    body = outcome(client.post("/fhir/Observation", json=bad), fhir_schema, 422)
    assert body["issue"][0]["expression"] == ["Observation.component[0].valueInteger"]
    # A rule of the mapping itself.
    body = outcome(
        client.post("/fhir/Observation", json={**obs, "status": "cancelled"}), fhir_schema, 422
    )
    assert body["issue"][0]["expression"] == ["Observation.status"]
    # An unknown patient is 404, as in v1.
    unknown = {**obs, "subject": {"reference": "Patient/00000000-0000-4000-8000-00000000dead"}}
    outcome(client.post("/fhir/Observation", json=unknown), fhir_schema, 404)
    outcome(client.get("/fhir/Observation/not-a-uuid"), fhir_schema, 404)
    outcome(client.get("/fhir/Observation", params={"date": "gex"}), fhir_schema, 422)
    outcome(client.get("/fhir/Observation", params={"_count": "-1"}), fhir_schema, 422)
    outcome(client.get("/fhir/Patient"), fhir_schema, 422)
    r = client.get(f"/fhir/Patient/{patient['id']}", headers={"Authorization": "Bearer nope"})
    outcome(r, fhir_schema, 401)
    assert "WWW-Authenticate" in r.headers


def test_another_organizations_records_are_404(client: TestClient, fhir_schema: FhirSchema) -> None:
    a, b = new_tenant(client, "fhir-a"), new_tenant(client, "fhir-b")
    pid = client.post(
        "/v1/patients",
        json={"identifiers": [{"system": TRIAL_SYSTEM, "value": "S-A"}], "organization_id": a.id},
    ).json()["id"]
    aid = new_assessment(client, pid, "2021-03-01")["id"]
    for url in (
        f"/fhir/Patient/{pid}",
        f"/fhir/Observation/{aid}",
        f"/fhir/Observation/{aid}/_history",
        f"/fhir/Observation/{aid}/_history/1",
    ):
        outcome(client.get(url, headers=bearer(b.token)), fhir_schema, 404)
        served(client.get(url, headers=bearer(a.token)), fhir_schema)
    found = served(
        client.get("/fhir/Observation", params={"patient": pid}, headers=bearer(b.token)),
        fhir_schema,
    )
    assert found["total"] == 0
    found = served(
        client.get(
            "/fhir/Patient", params={"identifier": f"{TRIAL_SYSTEM}|S-A"}, headers=bearer(b.token)
        ),
        fhir_schema,
    )
    assert found["total"] == 0
    obs = client.get(f"/fhir/Observation/{aid}").json()
    outcome(client.post("/fhir/Observation", json=obs, headers=bearer(b.token)), fhir_schema, 404)


def test_refusals_before_the_route_are_operation_outcomes_too(
    client: TestClient, fhir_schema: FhirSchema
) -> None:
    r = client.post("/fhir/Observation", content=b"{}", headers={"Content-Type": "text/plain"})
    outcome(r, fhir_schema, 415)
    r = client.post("/fhir/Observation", content=b"{NaN}", headers={"Content-Type": FHIR_JSON})
    outcome(r, fhir_schema, 400)
    body = outcome(client.get("/fhir/Observation?patient=%00"), fhir_schema, 422)
    assert body["issue"][0]["diagnostics"].startswith("patient:")
    body = outcome(client.post("/fhir/Observation", json=[1]), fhir_schema, 422)
    assert body["issue"][0]["expression"] == ["Observation"]
    outcome(client.get("/fhir/Encounter/1"), fhir_schema, 404)
    r = client.delete("/fhir/Observation")
    assert "GET" in outcome(r, fhir_schema, 405)["issue"][0]["diagnostics"]
    assert r.headers["Allow"] == "GET, POST"
    # v1 keeps its problem details.
    r = client.get("/v1/patients?identifier=%00")
    assert r.headers["content-type"].startswith("application/problem+json")
