"""Organizations (SPEC §6): a key reaches only its organizations' patients and everything under
them; any other id answers exactly like an unknown one. The route table below is generated from
the app's own routes, so a new route that reaches patient data cannot escape it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.cli import main as keys_cli
from app.main import create_app
from app.settings import get_settings
from tests.api.helpers import (
    TRIAL_SYSTEM,
    all_pages,
    amend_body,
    assessment_body,
    bearer,
    error_locations,
    identifier,
    new_assessment,
    new_patient,
    new_treatment,
    patient_body,
    problem,
    treatment_body,
    treatment_content,
)

PROBLEM_BASE = "https://psoriasis-scoring.dev/problems/"
#: Path parameters naming a patient or a record under one: every route with one is scoped.
RECORD_PARAMS = frozenset({"patient_id", "assessment_id", "treatment_id"})
#: Path parameters known not to name patient data (API keys are the operator's; the FHIR
#: CodeSystem is the service's; a FHIR version id is scoped by the assessment id it follows).
NON_PATIENT_PARAMS = frozenset({"key_id", "code_system_id", "version_id"})
PROBE_REASON = "probing another organization's record"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- the routes


def _api_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every API route of the app, whether or not the installed
    FastAPI keeps included routers as lazy branches of `app.routes`."""
    found: set[tuple[str, str]] = set()
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.16x
    except ImportError:  # pragma: no cover - older FastAPI flattens included routers
        for route in app.routes:
            if isinstance(route, APIRoute):
                found.update((m, route.path) for m in route.methods)
    else:
        for context in iter_route_contexts(app.routes):
            if isinstance(context.original_route, APIRoute):
                found.update((m, str(context.path)) for m in context.methods or ())
    return sorted(found, key=lambda r: (r[1], r[0]))


def _path_params(path: str) -> set[str]:
    return set(re.findall(r"\{([^}:]+)(?::[^}]*)?\}", path))


API_ROUTES = _api_routes(create_app())
SCOPED_ROUTES = [(m, p) for m, p in API_ROUTES if _path_params(p) & RECORD_PARAMS]


@dataclass(frozen=True)
class Records:
    """Organization A's data, as A's key created it."""

    patient: dict[str, Any]
    assessment: dict[str, Any]
    treatment: dict[str, Any]

    def ids(self) -> dict[str, str]:
        return {
            "patient_id": str(self.patient["id"]),
            "assessment_id": str(self.assessment["id"]),
            "treatment_id": str(self.treatment["id"]),
        }


@dataclass(frozen=True)
class Attempt:
    """Everything of a request but its URL: valid in every respect, so that only scoping can
    turn it away."""

    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _amend_treatment(records: Records) -> Attempt:
    body = {**treatment_content(records.treatment), "ended_on": "2020-06-30"}
    return Attempt(json={**body, "reason": PROBE_REASON}, headers={"If-Match": "*"})


#: (method, path template) -> a valid request for it. Every route that reaches a patient's data
#: must have an entry: the generated test below fails for a route that has none.
SCOPED_REQUESTS: dict[tuple[str, str], Callable[[Records], Attempt]] = {
    ("GET", "/v1/patients/{patient_id}"): lambda r: Attempt(),
    ("POST", "/v1/patients/{patient_id}/assessments"): lambda r: Attempt(
        json=assessment_body("2020-05-05", pasi_level=3, visit="Week 12")
    ),
    ("GET", "/v1/patients/{patient_id}/assessments"): lambda r: Attempt(),
    ("POST", "/v1/patients/{patient_id}/treatments"): lambda r: Attempt(
        json=treatment_body("2020-07-01", agent="methotrexate")
    ),
    ("GET", "/v1/patients/{patient_id}/treatments"): lambda r: Attempt(),
    ("GET", "/v1/patients/{patient_id}/outcomes"): lambda r: Attempt(),
    ("GET", "/v1/patients/{patient_id}/chart.svg"): lambda r: Attempt(),
    ("GET", "/v1/patients/{patient_id}/chart.png"): lambda r: Attempt(
        params={"width": "800", "height": "500"}
    ),
    ("GET", "/v1/assessments/{assessment_id}"): lambda r: Attempt(),
    ("PUT", "/v1/assessments/{assessment_id}"): lambda r: Attempt(
        json=amend_body(r.assessment, PROBE_REASON, iga=1), headers={"If-Match": "*"}
    ),
    ("DELETE", "/v1/assessments/{assessment_id}"): lambda r: Attempt(
        params={"reason": PROBE_REASON}
    ),
    ("GET", "/v1/assessments/{assessment_id}/history"): lambda r: Attempt(),
    ("GET", "/v1/treatments/{treatment_id}"): lambda r: Attempt(),
    ("PUT", "/v1/treatments/{treatment_id}"): _amend_treatment,
    ("DELETE", "/v1/treatments/{treatment_id}"): lambda r: Attempt(params={"reason": PROBE_REASON}),
    ("GET", "/v1/treatments/{treatment_id}/history"): lambda r: Attempt(),
    ("GET", "/fhir/Patient/{patient_id}"): lambda r: Attempt(),
    ("GET", "/fhir/Observation/{assessment_id}"): lambda r: Attempt(),
    ("GET", "/fhir/Observation/{assessment_id}/_history"): lambda r: Attempt(),
    ("GET", "/fhir/Observation/{assessment_id}/_history/{version_id}"): lambda r: Attempt(),
}


def _route_id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


def _send(
    client: TestClient, route: tuple[str, str], ids: dict[str, str], attempt: Attempt, token: str
) -> httpx.Response:
    method, template = route
    ids = {"version_id": "1", **ids}
    url = re.sub(r"\{([^}:]+)(?::[^}]*)?\}", lambda m: ids[m.group(1)], template)
    return client.request(
        method,
        url,
        json=attempt.json,
        params=attempt.params,
        headers={**attempt.headers, **bearer(token)},
    )


def _outcome_404(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = dict(response.json())
    assert body["resourceType"] == "OperationOutcome"
    assert [i["code"] for i in body["issue"]] == ["not-found"]
    return body


def _with_ids_masked(value: Any, ids: dict[str, str]) -> Any:
    """`value` with each id in `ids` replaced by its parameter's name, in every string."""
    if isinstance(value, dict):
        return {k: _with_ids_masked(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_ids_masked(v, ids) for v in value]
    if isinstance(value, str):
        for name, record_id in ids.items():
            value = value.replace(record_id, f"<{name}>")
        return value
    return value


# --------------------------------------------------------------------------- organizations


@dataclass(frozen=True)
class Tenant:
    """An organization and a read+write key bound to it."""

    id: str
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def new_organization(client: TestClient, name: str | None = None) -> dict[str, Any]:
    r = client.post("/v1/organizations", json={"name": name or _unique("clinic")})
    assert r.status_code == 201, r.text
    return dict(r.json())


def post_key(
    client: TestClient, scopes: list[str], organizations: list[str] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"name": _unique("key"), "scopes": scopes}
    if organizations is not None:
        body["organizations"] = organizations
    return client.post("/v1/api-keys", json=body)


def new_key(client: TestClient, scopes: list[str], organizations: list[str] | None = None) -> str:
    """A new key's token (created with the admin client)."""
    r = post_key(client, scopes, organizations)
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def new_tenant(client: TestClient, prefix: str) -> Tenant:
    org = new_organization(client, _unique(prefix))
    token = new_key(client, ["read", "write"], [org["id"]])
    return Tenant(str(org["id"]), str(org["name"]), token)


def default_organization_id(client: TestClient) -> str:
    r = client.get("/v1/organizations")
    assert r.status_code == 200, r.text
    (default,) = [o for o in r.json()["items"] if o["name"] == "default"]
    return str(default["id"])


def as_key(client: TestClient, token: str) -> TestClient:
    """A client on the same running app that sends `token` (leaves the admin client alone)."""
    return TestClient(client.app, headers=bearer(token))


def key_listing(client: TestClient) -> dict[str, dict[str, Any]]:
    r = client.get("/v1/api-keys")
    assert r.status_code == 200, r.text
    return {k["name"]: k for k in r.json()["items"]}


def assert_invalid(response: httpx.Response, pointer: str) -> dict[str, Any]:
    body = problem(response, 422)
    assert body["type"] == PROBLEM_BASE + "validation-error", body
    assert pointer in error_locations(body), body
    return body


@pytest.fixture
def tenants(client: TestClient) -> tuple[Tenant, Tenant]:
    """Organizations A and B (besides `default`), each with a read+write key."""
    return new_tenant(client, "clinic-a"), new_tenant(client, "study-b")


@pytest.fixture
def a_records(client: TestClient, tenants: tuple[Tenant, Tenant]) -> Records:
    a, _b = tenants
    as_a = as_key(client, a.token)
    patient = new_patient(as_a, "A-001")
    assert patient["organization_id"] == a.id
    assessment = new_assessment(as_a, patient["id"], "2020-01-10", visit="Baseline", iga=3)
    treatment = new_treatment(as_a, patient["id"], "2020-01-11")
    return Records(patient, assessment, treatment)


def snapshot(client: TestClient, token: str, records: Records) -> dict[str, Any]:
    """What A's key reads of A's patient: its record, lists, records and their histories."""
    headers = bearer(token)
    reads = {
        "patient": f"/v1/patients/{records.patient['id']}",
        "assessments": f"/v1/patients/{records.patient['id']}/assessments",
        "treatments": f"/v1/patients/{records.patient['id']}/treatments",
        "assessment": f"/v1/assessments/{records.assessment['id']}",
        "assessment-history": f"/v1/assessments/{records.assessment['id']}/history",
        "treatment": f"/v1/treatments/{records.treatment['id']}",
        "treatment-history": f"/v1/treatments/{records.treatment['id']}/history",
    }
    seen: dict[str, Any] = {}
    for name, url in reads.items():
        r = client.get(url, headers=headers)
        assert r.status_code == 200, (url, r.text)
        seen[name] = r.json()
        if name in {"assessment", "treatment"}:
            seen[f"{name}-etag"] = r.headers["ETag"]
    return seen


# --------------------------------------------------------------------------- 1. routes by id


def test_the_scoped_route_inventory_finds_every_record_route() -> None:
    found = {_route_id(r) for r in SCOPED_ROUTES}
    assert {
        "GET /v1/patients/{patient_id}",
        "PUT /v1/assessments/{assessment_id}",
        "DELETE /v1/treatments/{treatment_id}",
        "GET /v1/patients/{patient_id}/outcomes",
    } <= found
    assert len(SCOPED_ROUTES) >= 14


def test_every_path_parameter_is_known_to_name_patient_data_or_not() -> None:
    """A route with a new kind of id (a FHIR resource's, an export's ...) must be classified:
    into RECORD_PARAMS (and SCOPED_REQUESTS) when it reaches patient data, else into
    NON_PATIENT_PARAMS."""
    unclassified = {
        _route_id(route): sorted(_path_params(route[1]) - RECORD_PARAMS - NON_PATIENT_PARAMS)
        for route in API_ROUTES
        if _path_params(route[1]) - RECORD_PARAMS - NON_PATIENT_PARAMS
    }
    assert unclassified == {}, (
        f"routes with path parameters not classified in {__name__}: {unclassified}"
    )


def test_every_scoped_request_builder_still_has_its_route() -> None:
    stale = sorted(_route_id(r) for r in set(SCOPED_REQUESTS) - set(SCOPED_ROUTES))
    assert stale == [], f"SCOPED_REQUESTS has entries for routes that no longer exist: {stale}"


@pytest.mark.parametrize("route", SCOPED_ROUTES, ids=_route_id)
def test_another_organizations_id_answers_exactly_like_an_unknown_id(
    client: TestClient,
    tenants: tuple[Tenant, Tenant],
    a_records: Records,
    route: tuple[str, str],
) -> None:
    builder = SCOPED_REQUESTS.get(route)
    if builder is None:
        pytest.fail(
            f"{_route_id(route)} reaches patient data but has no request builder: add a valid "
            f"request for it to SCOPED_REQUESTS in {__name__}, so that organization scoping is "
            "tested on it",
            pytrace=False,
        )
    a, b = tenants
    before = snapshot(client, a.token, a_records)
    attempt = builder(a_records)
    real_ids = a_records.ids()
    unknown_ids = {name: str(uuid.uuid4()) for name in real_ids}

    foreign = _send(client, route, real_ids, attempt, b.token)
    unknown = _send(client, route, unknown_ids, attempt, b.token)

    if route[1].startswith("/fhir/"):  # FHIR errors are OperationOutcomes
        unknown_body, foreign_body = _outcome_404(unknown), _outcome_404(foreign)
    else:
        unknown_body = problem(unknown, 404)
        foreign_body = problem(foreign, 404)
        assert foreign_body["type"] == unknown_body["type"] == PROBLEM_BASE + "not-found"
        assert foreign_body["title"] == unknown_body["title"]
    assert _with_ids_masked(foreign_body, real_ids) == _with_ids_masked(unknown_body, unknown_ids)
    assert set(foreign.headers) == set(unknown.headers)
    for record_id in real_ids.values():
        assert record_id not in str(foreign.headers)

    # B's writes changed nothing of A's: same records, same versions, nothing new.
    after = snapshot(client, a.token, a_records)
    assert after == before
    assert after["assessment"]["version"] == 1
    assert len(after["assessments"]["items"]) == 1
    assert len(after["treatments"]["items"]) == 1
    assert len(after["assessment-history"]["items"]) == 1

    # And the request was valid: A's own key gets through with it.
    own = _send(client, route, real_ids, attempt, a.token)
    assert 200 <= own.status_code < 300, own.text


# --------------------------------------------------------------------------- 2. lists


def test_lists_and_searches_leave_other_organizations_patients_out(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    as_a, as_b = as_key(client, a.token), as_key(client, b.token)
    a_ids = {new_patient(as_a, f"A-{n}")["id"] for n in range(3)}
    b_ids = {new_patient(as_b, f"B-{n}")["id"] for n in range(2)}

    listed_by_b = all_pages(as_b, "/v1/patients", {"limit": 1})
    assert {p["id"] for p in listed_by_b} == b_ids
    assert {p["organization_id"] for p in listed_by_b} == {b.id}
    listed_by_a = all_pages(as_a, "/v1/patients", {"limit": 2})
    assert {p["id"] for p in listed_by_a} == a_ids

    for token in (f"{TRIAL_SYSTEM}|A-0", f"{TRIAL_SYSTEM}%7CA-0"):
        r = as_b.get(f"/v1/patients?identifier={token}")
        assert r.status_code == 200, r.text
        assert r.json() == {"items": [], "next_cursor": None}
    found_by_a = as_a.get("/v1/patients", params={"identifier": f"{TRIAL_SYSTEM}|A-0"})
    assert found_by_a.status_code == 200, found_by_a.text
    assert len(found_by_a.json()["items"]) == 1

    listed_by_admin = all_pages(client, "/v1/patients", {"limit": 2})
    assert {p["id"] for p in listed_by_admin} == a_ids | b_ids


def test_a_key_whose_organizations_hold_no_patients_lists_none(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _b = tenants
    new_patient(as_key(client, a.token), "A-only")
    c = new_tenant(client, "empty-c")
    assert all_pages(as_key(client, c.token), "/v1/patients") == []


# --------------------------------------------------------------------------- 3. identifiers


def test_the_same_identifier_can_exist_in_two_organizations_but_once_in_each(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    as_a, as_b = as_key(client, a.token), as_key(client, b.token)
    in_a = new_patient(as_a, "SHARED-1")
    in_b = new_patient(as_b, "SHARED-1")
    assert in_a["id"] != in_b["id"]
    assert (in_a["organization_id"], in_b["organization_id"]) == (a.id, b.id)

    reuse = as_a.post("/v1/patients", json=patient_body("SHARED-1"))
    body = problem(reuse, 409)
    assert body["type"] == PROBLEM_BASE + "identifier-in-use"
    assert body["patient_id"] == in_a["id"]
    assert in_a["id"] in body["detail"]
    assert in_b["id"] not in reuse.text

    # Each organization finds its own; the admin key finds one in each.
    query = {"identifier": f"{TRIAL_SYSTEM}|SHARED-1"}
    assert [p["id"] for p in as_b.get("/v1/patients", params=query).json()["items"]] == [in_b["id"]]
    by_admin = client.get("/v1/patients", params=query)
    assert by_admin.status_code == 200, by_admin.text
    assert {p["id"] for p in by_admin.json()["items"]} == {in_a["id"], in_b["id"]}


def test_an_identifier_reused_among_several_is_409_within_the_organization(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    as_a = as_key(client, a.token)
    holder = new_patient(as_a, "MRN-7", system="https://hospital.example/mrn")
    new_patient(as_key(client, b.token), "S-9")
    body = {"identifiers": [identifier("S-9"), identifier("MRN-7", "https://hospital.example/mrn")]}
    r = as_a.post("/v1/patients", json=body)
    assert problem(r, 409)["patient_id"] == holder["id"]


# --------------------------------------------------------------------------- 4. new patients


@dataclass(frozen=True)
class NewPatientCase:
    id: str
    caller: str  # "admin", "A" (a key of A), "A+B" (a key holding both)
    names: str | None  # the organization named: "A", "B", "default", "unknown" or none
    lands_in: str | None  # the organization the patient lands in; None: 422 /organization_id


NEW_PATIENT_CASES = [
    NewPatientCase("key-of-one-organization-names-none-lands-in-it", "A", None, "A"),
    NewPatientCase("key-of-one-organization-names-it", "A", "A", "A"),
    NewPatientCase("key-names-an-organization-it-does-not-hold", "A", "B", None),
    NewPatientCase("key-names-default-which-it-does-not-hold", "A", "default", None),
    NewPatientCase("key-names-an-unknown-organization", "A", "unknown", None),
    NewPatientCase("key-of-two-organizations-names-none", "A+B", None, None),
    NewPatientCase("key-of-two-organizations-names-one-of-them", "A+B", "B", "B"),
    NewPatientCase("admin-with-several-in-the-service-names-none", "admin", None, None),
    NewPatientCase("admin-names-default", "admin", "default", "default"),
    NewPatientCase("admin-names-another-organization", "admin", "B", "B"),
    NewPatientCase("admin-names-an-unknown-organization", "admin", "unknown", None),
]


@pytest.mark.parametrize("case", NEW_PATIENT_CASES, ids=lambda c: c.id)
def test_a_new_patients_organization_follows_the_keys_organizations(
    client: TestClient, tenants: tuple[Tenant, Tenant], case: NewPatientCase
) -> None:
    a, b = tenants
    org_ids = {"A": a.id, "B": b.id, "default": default_organization_id(client)}
    org_ids["unknown"] = str(uuid.uuid4())
    tokens = {"A": a.token, "A+B": new_key(client, ["read", "write"], [a.id, b.id])}
    caller = client if case.caller == "admin" else as_key(client, tokens[case.caller])

    body = patient_body("NEW-1")
    if case.names is not None:
        body["organization_id"] = org_ids[case.names]
    r = caller.post("/v1/patients", json=body)

    if case.lands_in is None:
        assert_invalid(r, "/organization_id")
        assert all_pages(client, "/v1/patients") == []
    else:
        assert r.status_code == 201, r.text
        assert r.json()["organization_id"] == org_ids[case.lands_in]
        stored = client.get(f"/v1/patients/{r.json()['id']}")
        assert stored.json()["organization_id"] == org_ids[case.lands_in]


# --------------------------------------------------------------------------- 5. keys


@pytest.mark.parametrize("organizations", [None, []], ids=["left-out", "empty"])
def test_a_non_admin_key_without_organizations_is_422_when_the_service_has_several(
    client: TestClient, tenants: tuple[Tenant, Tenant], organizations: list[str] | None
) -> None:
    r = post_key(client, ["read", "write"], organizations)
    assert_invalid(r, "/organizations")


@pytest.mark.parametrize(
    ("held", "pointer"),
    [
        (["unknown"], "/organizations/0"),
        (["A", "unknown"], "/organizations/1"),
        (["A", "not-a-uuid"], "/organizations/1"),
    ],
    ids=["only-an-unknown-one", "a-known-one-then-an-unknown-one", "not-a-uuid"],
)
def test_a_key_naming_an_unknown_organization_is_422_pointing_at_it(
    client: TestClient, tenants: tuple[Tenant, Tenant], held: list[str], pointer: str
) -> None:
    a, _b = tenants
    org_ids = {"A": a.id, "unknown": str(uuid.uuid4()), "not-a-uuid": "clinic-a"}
    name = _unique("bad-org-key")
    r = client.post(
        "/v1/api-keys",
        json={"name": name, "scopes": ["read"], "organizations": [org_ids[h] for h in held]},
    )
    assert_invalid(r, pointer)
    assert name not in key_listing(client)


@pytest.mark.parametrize(
    "scopes", [["admin"], ["scores", "read", "write", "admin"]], ids=["admin-only", "all-scopes"]
)
def test_an_admin_key_naming_organizations_is_422(
    client: TestClient, tenants: tuple[Tenant, Tenant], scopes: list[str]
) -> None:
    a, _b = tenants
    r = post_key(client, scopes, [a.id])
    assert_invalid(r, "/organizations")


def test_with_only_the_default_organization_a_key_without_organizations_is_bound_to_it(
    client: TestClient,
) -> None:
    default_id = default_organization_id(client)
    r = post_key(client, ["read", "write"])
    assert r.status_code == 201, r.text
    assert r.json()["organizations"] == [default_id]
    assert key_listing(client)[r.json()["name"]]["organizations"] == [default_id]
    patient = new_patient(as_key(client, r.json()["key"]), "D-1")
    assert patient["organization_id"] == default_id


def test_the_key_listing_shows_what_each_key_holds(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    both = post_key(client, ["read"], [a.id, b.id, a.id])
    admin = post_key(client, ["admin"])
    assert both.status_code == 201, both.text
    assert admin.status_code == 201, admin.text
    listing = key_listing(client)
    assert sorted(listing[both.json()["name"]]["organizations"]) == sorted([a.id, b.id])
    assert listing[admin.json()["name"]]["organizations"] == []


def test_organization_names_are_unique(client: TestClient) -> None:
    name = _unique("clinic")
    new_organization(client, name)
    for taken in (name, "default"):
        body = problem(client.post("/v1/organizations", json={"name": taken}), 409)
        assert body["type"] == PROBLEM_BASE + "conflict"
    names = [o["name"] for o in all_pages(client, "/v1/organizations")]
    assert sorted(names) == sorted(["default", name])


def test_organizations_are_listed_with_their_ids(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    listed = all_pages(client, "/v1/organizations", {"limit": 1})
    assert {o["id"]: o["name"] for o in listed} == {
        default_organization_id(client): "default",
        a.id: a.name,
        b.id: b.name,
    }


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("POST", {"name": "not-allowed"})],
    ids=["list", "create"],
)
def test_organizations_are_admin_only(
    client: TestClient, tenants: tuple[Tenant, Tenant], method: str, body: dict[str, str] | None
) -> None:
    a, _b = tenants
    r = client.request(method, "/v1/organizations", json=body, headers=a.headers)
    assert problem(r, 403)["type"] == PROBLEM_BASE + "forbidden"
    assert "not-allowed" not in {o["name"] for o in all_pages(client, "/v1/organizations")}


# --------------------------------------------------------------------------- 6. write-only 409


def test_a_write_only_keys_409_does_not_reveal_the_holder(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _b = tenants
    holder = new_patient(as_key(client, a.token), "HELD-1")
    write_only = new_key(client, ["write"], [a.id])
    r = client.post("/v1/patients", json=patient_body("HELD-1"), headers=bearer(write_only))
    body = problem(r, 409)
    assert body["type"] == PROBLEM_BASE + "identifier-in-use"
    assert "patient_id" not in body
    assert holder["id"] not in r.text
    assert holder["id"] not in str(r.headers)


def test_a_read_write_keys_409_names_the_holder(
    client: TestClient, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _b = tenants
    holder = new_patient(as_key(client, a.token), "HELD-2")
    r = client.post("/v1/patients", json=patient_body("HELD-2"), headers=a.headers)
    body = problem(r, 409)
    assert body["patient_id"] == holder["id"]
    assert holder["id"] in body["detail"]


# --------------------------------------------------------------------------- 7. quick start


def test_the_readme_quick_start_needs_no_organization(client: TestClient) -> None:
    default_id = default_organization_id(client)
    r = client.post(
        "/v1/patients",
        json={
            "identifiers": [{"system": TRIAL_SYSTEM, "value": "S-001"}],
            "sex": "female",
            "birth_year": 1975,
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["organization_id"] == default_id
    r = client.post(
        f"/v1/patients/{r.json()['id']}/assessments",
        json=assessment_body("2019-03-04", visit="Baseline", iga=4),
        headers={"Idempotency-Key": "visit-1"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["scores"]["pasi"] == 28.7


# --------------------------------------------------------------------------- 8. CLI


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = keys_cli(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("by", ["name", "id"])
def test_the_cli_binds_a_key_to_the_organization_named(
    client: TestClient, capsys: pytest.CaptureFixture[str], by: str
) -> None:
    outsider = new_patient(client, "DEFAULT-1")  # while `default` is the only organization
    assert outsider["organization_id"] == default_organization_id(client)
    org = new_organization(client)
    name = _unique("cli-org")

    code, out, err = _cli(
        capsys, "create", name, "--scopes", "read,write", "--organizations", org[by]
    )
    assert code == 0, err
    token_match = re.search(r"key \(shown once\): (pss_\S+)", out)
    assert token_match, out
    assert org["id"] in out
    assert key_listing(client)[name]["organizations"] == [org["id"]]

    as_cli_key = as_key(client, token_match.group(1))
    created = new_patient(as_cli_key, "CLI-1")
    assert created["organization_id"] == org["id"]
    problem(as_cli_key.get(f"/v1/patients/{outsider['id']}"), 404)
    assert [p["id"] for p in all_pages(as_cli_key, "/v1/patients")] == [created["id"]]


@pytest.mark.usefixtures("cli_env")
def test_the_cli_refuses_an_unknown_organization(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _unique("cli-nosuch")
    code, out, err = _cli(
        capsys, "create", name, "--scopes", "read,write", "--organizations", "nosuch"
    )
    assert code == 1
    assert "error" in err
    assert "nosuch" in err
    assert "pss_" not in out
    assert name not in key_listing(client)


@pytest.mark.usefixtures("cli_env")
def test_the_cli_needs_organizations_for_a_non_admin_key_when_there_are_several(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    new_organization(client)
    name = _unique("cli-unbound")
    code, _out, err = _cli(capsys, "create", name, "--scopes", "read")
    assert code == 1
    assert "--organizations" in err
    assert name not in key_listing(client)


@pytest.mark.usefixtures("cli_env")
def test_the_cli_refuses_organizations_for_an_admin_key(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    org = new_organization(client)
    name = _unique("cli-admin")
    code, out, err = _cli(
        capsys, "create", name, "--scopes", "admin", "--organizations", org["name"]
    )
    assert code == 1
    assert "--organizations" in err
    assert "pss_" not in out
    assert name not in key_listing(client)
