"""`LeanRoute`'s planned parameters and its literal-start check against FastAPI's own functions,
on every route of the service: the same values and errors for the same request, the same match
for the same path."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers, QueryParams
from starlette.routing import Match

from app.api.lean_route import LeanRoute, _Node, _params_to_args, _plan
from app.main import create_app
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    tmp = tmp_path_factory.mktemp("lean-params")
    return create_app(make_settings(f"sqlite:///{tmp / 'unused.db'}", tmp))


def _routes(app: FastAPI) -> list[LeanRoute]:
    return [r for r in app.routes if isinstance(r, LeanRoute)]


def _nodes(node: _Node) -> list[_Node]:
    return [node, *(n for child in node.children for n in _nodes(child))]


def _sources(app: FastAPI) -> list[tuple[str, str, Any]]:
    """(route, source, (fields, plan)) for every parameter source of every planned route."""
    found = []
    for route in _routes(app):
        plan = _plan(route.dependant)
        assert plan is not None, route.path
        for node in _nodes(plan):
            for source, fields, planned in node.params:
                found.append((route.path, source, (fields, planned)))
    return found


def test_the_hot_routes_parameters_are_planned(app: FastAPI) -> None:
    sources = _sources(app)
    planned = {(path, source) for path, source, (_f, plan) in sources if plan is not None}
    assert ("/v1/patients/{patient_id}/assessments", "path") in planned
    assert ("/v1/patients/{patient_id}/assessments", "header") in planned
    assert ("/v1/patients/{patient_id}/outcomes", "query") in planned


KEYS = st.sampled_from(
    [
        "limit",
        "cursor",
        "from",
        "to",
        "visit",
        "clearance",
        "relapse",
        "relapse_threshold",
        "rebound_window_days",
        "reason",
        "patient_id",
        "assessment_id",
        "idempotency-key",
        "if-match",
        "_count",
        "subject",
        "code",
        "format",
        "organization",
        "patient",
    ]
)
VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "50", "201", "-1", "x", "pasi90", "2021-01-01", "*", '"1"']),
    st.sampled_from(["00000000-0000-4000-8000-000000000001", "not-a-uuid", "k" * 300]),
    st.text(max_size=8),
)
PAIRS = st.lists(st.tuples(KEYS, VALUES), max_size=6)


@settings(max_examples=200, deadline=None)
@given(pairs=PAIRS)
def test_planned_parameters_give_fastapis_values_and_errors(
    app: FastAPI, pairs: list[tuple[str, str]]
) -> None:
    for _path, source, (fields, planned) in _sources(app):
        if source == "query":
            received: Any = QueryParams(pairs)
        elif source == "header":
            received = Headers(raw=[(k.encode(), v.encode()) for k, v in pairs])
        else:  # path and cookie parameters are plain dicts (one value per name)
            received = dict(pairs)
        lean = _params_to_args(planned, fields, received)
        assert _comparable(lean) == _comparable(request_params_to_args(fields, received))


def _comparable(value: Any) -> Any:
    """Errors hold the exception a validator raised: compared by type and message."""
    if isinstance(value, BaseException):
        return (type(value), str(value))
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_comparable(v) for v in value)
    return value


PATHS = st.one_of(
    st.sampled_from(
        [
            "/",
            "",
            "/v1",
            "/v1/",
            "/v1/patients",
            "/v1/patients/",
            "/v1/patients/abc",
            "/v1/patients/abc/",
            "/v1/patients/abc/assessments",
            "/v1/patients/abc/assessments/",
            "/v1/patients//assessments",
            "/v1/scores/pasi",
            "/v1/scores/pasi/",
            "/v1/assessments/x/history",
            "/fhir/Patient/x",
            "/fhir/metadata",
            "/docs",
            "/healthz",
        ]
    ),
    st.text(alphabet="/abcv1{}-_.", max_size=30).map(lambda t: "/" + t),
)


@settings(max_examples=300, deadline=None)
@given(path=PATHS, method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), root=st.booleans())
def test_the_literal_start_check_never_changes_a_match(
    app: FastAPI, path: str, method: str, root: bool
) -> None:
    root_path = "/base" if root else ""
    scope = {"type": "http", "path": root_path + path, "root_path": root_path, "method": method}
    for route in _routes(app):
        lean, _ = route.matches(dict(scope))
        standard, _ = APIRoute.matches(route, dict(scope))
        assert lean == standard, (route.path, path)
    # ... and it does skip: a path outside every literal start matches nothing, cheaply.
    if not any(path.startswith(r.path.partition("{")[0]) for r in _routes(app)):
        assert all(r.matches(dict(scope))[0] is Match.NONE for r in _routes(app))
