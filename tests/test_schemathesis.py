"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI document and checks
that no answer is a server error, that every status code and content type is documented, and that
every body matches its documented schema. Budget: a fixed, derandomized number of examples per
operation, so the run is repeatable and fits CI."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.services.api_keys import BOOTSTRAP_KEY_FILE
from tests.conftest import make_settings
from tests.dbs import empty_database, migrate

EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

schema = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with empty_database("sqlite", tmp) as url:
        migrate(url)
        app = create_app(make_settings(url, tmp, rate_limit_per_minute=0))
        with TestClient(app, raise_server_exceptions=False) as client:
            key = (tmp / BOOTSTRAP_KEY_FILE).read_text().strip()
            client.headers["Authorization"] = f"Bearer {key}"
            yield client


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, fuzz_client: TestClient
) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), bytes | str):  # requests-style raw body -> httpx's content
        kwargs["content"] = kwargs.pop("data")
    headers = dict(kwargs.pop("headers", None) or {})
    # Always authenticate: otherwise most generated requests stop at 401 and test nothing.
    headers["Authorization"] = fuzz_client.headers["Authorization"]
    response = fuzz_client.request(headers=headers, **kwargs)
    case.validate_response(response, checks=CHECKS)


def _cursor(values: object) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


PID = "00000000-0000-4000-8000-000000000001"
# Forged query values that once answered 500 (each must be a documented 422 naming the parameter).
FORGED = [
    ("/v1/patients", "GET", {}, {"cursor": _cursor(["2020-01-01T00:00:00+00:00", 5])}),
    (
        "/v1/patients/{patient_id}/assessments",
        "GET",
        {"patient_id": PID},
        {"cursor": _cursor(["2020-01-01", "2020-01-01T00:00:00+00:00", 5])},
    ),
    ("/v1/audit-events", "GET", {}, {"cursor": _cursor([True])}),
    ("/v1/audit-events", "GET", {}, {"cursor": _cursor([9223372036854775808])}),
    ("/v1/audit-events", "GET", {}, {"since": "0001-01-01T00:00:00+05:00"}),
    ("/v1/audit-events", "GET", {}, {"until": "9999-12-31T23:59:59-05:00"}),
]


@pytest.mark.parametrize(
    ("path", "method", "path_parameters", "query"),
    FORGED,
    ids=[f"{p} {sorted(q)[0]}={q[sorted(q)[0]][:16]}" for p, _m, _pp, q in FORGED],
)
def test_forged_cursors_and_extreme_dates_are_422_naming_the_parameter(
    fuzz_client: TestClient,
    path: str,
    method: str,
    path_parameters: dict[str, str],
    query: dict[str, str],
) -> None:
    if path_parameters:  # a real patient, so that its cursor is read (an unknown one is 404)
        # The fuzzing may have created organizations: name the first one (`default`).
        org = fuzz_client.get("/v1/organizations", params={"limit": 1}).json()["items"][0]
        created = fuzz_client.post(
            "/v1/patients",
            json={
                "identifiers": [{"system": "urn:forged", "value": str(uuid.uuid4())}],
                "organization_id": org["id"],
            },
        )
        assert created.status_code == 201, created.text
        path_parameters = {"patient_id": created.json()["id"]}
    case = schema[path][method].Case(path_parameters=path_parameters, query=query)
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)
    headers = {**dict(kwargs.pop("headers", None) or {}), **fuzz_client.headers}
    response = fuzz_client.request(headers=headers, **kwargs)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 422, response.text
    (name,) = query
    assert [e["parameter"] for e in response.json()["errors"]] == [name]
