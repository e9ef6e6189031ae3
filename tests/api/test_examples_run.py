"""Every operation's documented example runs as the Swagger UI pre-fills it, and answers its
documented success status: a dermatologist pressing "Try it out", then "Execute", gets an
answer, not a 422. The ids an example needs (a patient, its assessment ...) come from running
the examples before it, as a user would; what only the user can supply (the ETag they read,
the reason for marking entered-in-error) is supplied as the field descriptions say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.api_keys import BOOTSTRAP_KEY_FILE
from tests.conftest import make_settings
from tests.dbs import empty_database, migrate, selected_backends

HTTP_METHODS = ("get", "post", "put", "delete")
# Creating a second organization makes `organization_id` required for new patients and keys,
# so it runs after them; DELETEs run last (an entered-in-error record cannot be amended).
ORDER = {("post", "/v1/patients"): 0, ("post", "/v1/api-keys"): 1, ("post", "/v1/organizations"): 3}
METHOD_ORDER = {"post": 2, "get": 4, "put": 5, "delete": 6}


@pytest.fixture(params=selected_backends(None))
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    with empty_database(request.param, tmp_path) as url:
        migrate(url)
        app = create_app(make_settings(url, tmp_path / "data"))
        with TestClient(app) as client:
            key = (tmp_path / "data" / BOOTSTRAP_KEY_FILE).read_text().strip()
            client.headers["Authorization"] = f"Bearer {key}"
            yield client


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = [
        (path, method, op)
        for path, item in doc["paths"].items()
        if path.startswith(("/v1/", "/fhir/"))
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    return sorted(ops, key=lambda o: (ORDER.get((o[1], o[0]), METHOD_ORDER[o[1]]), o[0]))


def _success(op: dict[str, Any]) -> int:
    return min(int(code) for code in op["responses"] if code.startswith("2"))


def _bodies(op: dict[str, Any]) -> list[Any]:
    body = op.get("requestBody")
    if not body or not body.get("required"):
        return [None]
    media = next(iter(body["content"].values()))  # application/json, or FHIR's
    return [example["value"] for example in media["examples"].values()]


def test_every_documented_example_runs_as_prefilled(fresh: TestClient) -> None:
    client = fresh
    doc = client.get("/openapi.json").json()
    # FHIR ids the user reads off the page: the service's CodeSystem, version 1 of a record.
    ids: dict[str, str] = {"code_system_id": "psoriasis-severity", "version_id": "1"}
    ran: list[str] = []
    for path, method, op in _operations(doc):
        for body in _bodies(op):
            if "{key_id}" in path:  # revoke a key made for it
                made = client.post(
                    "/v1/api-keys", json={"name": f"to-revoke-{len(ran)}", "scopes": ["admin"]}
                )
                ids["key_id"] = made.json()["id"]
            url = path.format(**ids)
            if path == "/fhir/Observation" and method == "post":  # as its description says
                body = {**body, "subject": {"reference": f"Patient/{ids['patient_id']}"}}
            params: dict[str, Any] = {}
            headers: dict[str, str] = {}
            for parameter in op.get("parameters", []):
                if parameter["in"] == "query" and "example" in parameter.get("schema", {}):
                    params[parameter["name"]] = parameter["schema"]["example"]
                if parameter["name"] == "If-Match":
                    headers["If-Match"] = client.get(url).headers["ETag"]  # as its text says
            if method == "delete" and "{key_id}" not in path:
                params["reason"] = "example run by the test suite"
            r = client.request(method.upper(), url, json=body, params=params, headers=headers)
            label = f"{method.upper()} {path}"
            assert r.status_code == _success(op), f"{label}: {r.status_code} {r.text[:500]}"
            ran.append(label)
            answer = r.json() if r.headers.get("content-type", "").endswith("json") else {}
            if path == "/v1/patients" and method == "post":
                ids["patient_id"] = answer["id"]
            elif path.endswith("/assessments") and method == "post":
                ids.setdefault("assessment_id", answer["id"])
            elif path.endswith("/treatments") and method == "post":
                ids.setdefault("treatment_id", answer["id"])
    assert len(set(ran)) == len(_operations(doc))


def test_the_week_12_example_shows_a_response_without_retyping(fresh: TestClient) -> None:
    doc = fresh.get("/openapi.json").json()
    post = doc["paths"]["/v1/patients/{patient_id}/assessments"]["post"]
    patient = doc["paths"]["/v1/patients"]["post"]["requestBody"]["content"]["application/json"]
    pid = fresh.post("/v1/patients", json=next(iter(patient["examples"].values()))["value"])
    pid = pid.json()["id"]
    for example in post["requestBody"]["content"]["application/json"]["examples"].values():
        assert fresh.post(f"/v1/patients/{pid}/assessments", json=example["value"]).is_success
    outcomes = fresh.get(f"/v1/patients/{pid}/outcomes").json()
    assert outcomes["responses"]["pasi75"]["reached_now"] is True
    assert [p["visit"] for p in outcomes["series"]] == ["Baseline", "Week 12"]


def test_examples_keep_clinical_order() -> None:
    doc = create_app().openapi()
    media = doc["paths"]["/v1/patients/{patient_id}/assessments"]["post"]["requestBody"]
    pasi = media["content"]["application/json"]["examples"]["baseline"]["value"]["pasi"]
    assert list(pasi) == ["head_neck", "upper_limbs", "trunk", "lower_limbs"]
    assert list(pasi["head_neck"]) == ["erythema", "induration", "desquamation", "area_percent"]


def test_list_filters_carry_no_example_that_would_filter_everything_away() -> None:
    doc = create_app().openapi()
    op = doc["paths"]["/v1/patients/{patient_id}/assessments"]["get"]
    for parameter in op["parameters"]:
        if parameter["name"] in ("from", "to", "visit"):
            assert "example" not in parameter.get("schema", {})
            assert "examples" not in parameter
