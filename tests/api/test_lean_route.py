"""`LeanRoute` (app/api/lean_route.py) answers exactly what FastAPI's own handler answers: the same
status, headers and bytes for valid and invalid requests alike. FastAPI's handler is still there
and takes over while dependency overrides are set, which is how these tests get the reference
answer from the very same app."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from app.api.lean_route import LeanRoute
from app.schemas.scores import PASI_EXAMPLE
from tests.api.helpers import assessment_body, new_assessment, new_patient


def _never() -> None:  # pragma: no cover - only its identity is used
    """A dependency no route has: overriding it switches every route to FastAPI's handler."""


@contextmanager
def fastapi_handler(client: TestClient) -> Iterator[None]:
    overrides = client.app.dependency_overrides  # type: ignore[attr-defined]
    overrides[_never] = _never
    try:
        yield
    finally:
        overrides.pop(_never, None)


def _routes(client: TestClient) -> list[APIRoute]:
    return [
        c.original_route
        for c in iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
        if isinstance(c.original_route, APIRoute)
    ]


Answer = tuple[int, list[tuple[str, str]], bytes]


def _answer(client: TestClient, method: str, url: str, **kwargs: Any) -> Answer:
    r = client.request(method, url, **kwargs)
    return r.status_code, sorted(r.headers.items()), r.content


def _both(client: TestClient, method: str, url: str, **kwargs: Any) -> tuple[Answer, Answer]:
    lean = _answer(client, method, url, **kwargs)
    with fastapi_handler(client):
        standard = _answer(client, method, url, **kwargs)
    return lean, standard


def test_every_route_is_lean_and_the_hot_ones_take_the_planned_path(client: TestClient) -> None:
    routes = [r for r in _routes(client) if r.path not in ("/docs", "/redoc")]
    assert routes
    assert all(isinstance(r, LeanRoute) for r in routes)
    planned = {(m, r.path) for r in routes if getattr(r, "planned", False) for m in r.methods}
    for hot in [
        ("POST", "/v1/scores/pasi"),
        ("POST", "/v1/patients/{patient_id}/assessments"),
        ("GET", "/v1/patients/{patient_id}/outcomes"),
        ("PUT", "/v1/assessments/{assessment_id}"),
        ("POST", "/fhir/Observation"),
    ]:
        assert hot in planned, f"{hot} falls back to FastAPI's handler"
    # Only the documentation pages (FastAPI's own routes) are not LeanRoutes; every LeanRoute
    # of the service is planned: a fallback is a regression of the plan.
    assert [(r.methods, r.path) for r in routes if not r.planned] == []  # type: ignore[attr-defined]


def _mutations() -> st.SearchStrategy[Any]:
    """Scoring bodies near the valid example: fields dropped, retyped, out of range, added."""
    odd = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 120),
        st.floats(-1, 101, allow_nan=False),
        st.sampled_from(["", "3", "x\u0000", "NaN"]),
        st.lists(st.integers(0, 4), max_size=2),
        st.just({}),
    )
    paths = st.sampled_from(
        [
            ("pasi",),
            ("iga",),
            ("bsa_percent",),
            ("dlqi",),
            ("extra",),
            *[("pasi", r) for r in PASI_EXAMPLE],
            *[
                ("pasi", r, f)
                for r in PASI_EXAMPLE
                for f in ("erythema", "induration", "desquamation", "area_percent", "area_score")
            ],
        ]
    )
    change = st.tuples(paths, st.one_of(st.just("drop"), odd))
    return st.lists(change, max_size=4)


def _apply(changes: list[tuple[tuple[str, ...], Any]]) -> Any:
    body: dict[str, Any] = {"pasi": copy.deepcopy(PASI_EXAMPLE), "iga": 3}
    for path, value in changes:
        target: Any = body
        for name in path[:-1]:
            if not isinstance(target, dict) or not isinstance(target.get(name), dict):
                target = None
                break
            target = target[name]
        if target is None:
            continue
        if value == "drop":
            target.pop(path[-1], None)
        else:
            target[path[-1]] = copy.deepcopy(value)  # never the same object in two places
    return body


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=_mutations())
def test_scoring_answers_are_byte_identical_to_fastapis(
    client: TestClient, changes: list[tuple[tuple[str, ...], Any]]
) -> None:
    body = _apply(changes)
    for path in ("/v1/scores/pasi", "/v1/scores/bsa", "/v1/scores/dlqi"):
        lean, standard = _both(client, "POST", path, json=body)
        assert lean == standard


JSON = {"Content-Type": "application/json"}
SCORE = "/v1/scores/pasi"
SOMEONE = "/v1/patients/00000000-0000-4000-8000-000000000001"  # nobody
VALID = assessment_body("2021-01-01")
REFUSALS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", SCORE, {"content": b""}),
    ("POST", SCORE, {"content": b"  ", "headers": JSON}),
    ("POST", SCORE, {"content": b"[]", "headers": JSON}),
    ("POST", SCORE, {"content": b"{}", "headers": {"Content-Type": "text/x+json"}}),
    ("POST", SCORE, {"content": b"{}", "headers": {"Content-Type": "application/json; a=b"}}),
    ("POST", SCORE, {"json": {"pasi": PASI_EXAMPLE}, "headers": {"Authorization": "Bearer no"}}),
    ("POST", SCORE, {"json": {"pasi": PASI_EXAMPLE}, "headers": {"Authorization": "Basic x"}}),
    ("POST", "/v1/patients/not-a-uuid/assessments", {"json": {}}),
    ("POST", f"{SOMEONE}/assessments", {"json": VALID}),
    ("POST", f"{SOMEONE}/assessments", {"json": {"assessed_on": "x"}}),
    ("POST", f"{SOMEONE}/assessments", {"json": VALID, "headers": {"Idempotency-Key": "k" * 256}}),
    ("GET", f"{SOMEONE}/outcomes", {}),
    ("GET", f"{SOMEONE}/outcomes", {"params": {"clearance": "x", "rebound_window_days": 0}}),
    ("GET", "/v1/patients?limit=0", {}),
    ("GET", "/fhir/Patient/not-a-uuid", {}),
    ("POST", "/fhir/Observation", {"json": {"resourceType": "Patient"}}),
    ("GET", "/healthz", {}),
]


@pytest.mark.parametrize(("method", "url", "kwargs"), REFUSALS)
def test_refusals_are_byte_identical_to_fastapis(
    client: TestClient, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    lean, standard = _both(client, method, url, **kwargs)
    assert lean == standard
    assert lean[0] != 500


def test_stored_records_and_outcomes_read_back_byte_identical(client: TestClient) -> None:
    pid = new_patient(client, "LEAN-1")["id"]
    first = new_assessment(client, pid, "2021-01-01", is_baseline=True)
    new_assessment(client, pid, "2021-03-01")
    for url in (
        f"/v1/patients/{pid}/outcomes",
        f"/v1/patients/{pid}/outcomes?clearance=pasi90&relapse=pasi_above&relapse_threshold=5",
        f"/v1/patients/{pid}/assessments",
        f"/v1/assessments/{first['id']}",
        f"/v1/assessments/{first['id']}/history",
        f"/v1/patients/{pid}",
        f"/fhir/Patient/{pid}",
    ):
        lean, standard = _both(client, "GET", url)
        assert lean[0] == 200, lean
        assert lean == standard, url


def test_a_write_answers_the_same_through_either_handler(client: TestClient) -> None:
    pid = new_patient(client, "LEAN-2")["id"]
    lean = client.post(f"/v1/patients/{pid}/assessments", json=assessment_body("2021-01-01"))
    with fastapi_handler(client):
        standard = client.post(
            f"/v1/patients/{pid}/assessments", json=assessment_body("2021-01-02")
        )
    assert lean.status_code == standard.status_code == 201

    def same_shape(r: Any) -> dict[str, Any]:
        body = r.json()
        for name in ("id", "recorded_at", "updated_at", "assessed_on"):
            body.pop(name)
        return {"body": body, "headers": sorted(k for k in r.headers if k != "content-length")}

    assert same_shape(lean) == same_shape(standard)


def test_a_body_is_parsed_once(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """BodyGuard parses the body (strictly); the lean handler takes that value. FastAPI's own
    handler parses it again, which is what the counter shows is gone."""
    calls = []
    original = Request.json

    async def counted(self: Request) -> Any:
        calls.append(1)
        return await original(self)

    monkeypatch.setattr(Request, "json", counted)
    body = json.dumps({"pasi": PASI_EXAMPLE}).encode()
    headers = {"Content-Type": "application/json"}
    assert client.post("/v1/scores/pasi", content=body, headers=headers).status_code == 200
    assert calls == []
    with fastapi_handler(client):
        assert client.post("/v1/scores/pasi", content=body, headers=headers).status_code == 200
    assert calls == [1]


def test_a_model_the_endpoint_built_is_not_validated_again(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastapi.routing

    validated = []
    original = fastapi.routing.serialize_response

    async def counted(**kwargs: Any) -> Any:
        validated.append(1)
        return await original(**kwargs)

    monkeypatch.setattr(fastapi.routing, "serialize_response", counted)
    monkeypatch.setattr("app.api.lean_route.serialize_response", counted)
    assert client.post("/v1/scores/pasi", json={"pasi": PASI_EXAMPLE}).status_code == 200
    assert validated == []
    with fastapi_handler(client):
        assert client.post("/v1/scores/pasi", json={"pasi": PASI_EXAMPLE}).status_code == 200
    assert validated == [1]
