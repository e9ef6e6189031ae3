"""The OpenAPI document: the committed openapi.yaml is current, and the /v1 contract is documented
(summaries, problem+json errors, request examples, field descriptions with ranges)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
PROBLEM_JSON = "application/problem+json"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

DOC: dict[str, Any] = create_app().openapi()
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]

V1_OPERATIONS = [
    pytest.param(path, method, op, id=f"{method.upper()} {path}")
    for path, item in DOC["paths"].items()
    if path.startswith("/v1/")
    for method, op in item.items()
    if method in HTTP_METHODS
]
WITH_BODY = [p for p in V1_OPERATIONS if "requestBody" in p.values[2]]
# A required body needs a worked example. DELETE's optional body (its `reason`) has none on
# purpose: a pre-filled reason would be recorded, append-only, as a false statement.
WITH_REQUIRED_BODY = [p for p in WITH_BODY if p.values[2]["requestBody"].get("required")]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`, and `anyOf: [X, null]` to X."""
    while True:
        if "$ref" in schema:
            schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]]
            continue
        options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
        if "anyOf" in schema and len(options) == 1:
            schema = options[0]
            continue
        return schema


def _differences(committed: Any, generated: Any, where: str = "") -> list[str]:
    """Where two JSON-like documents differ (first few only)."""
    if isinstance(committed, dict) and isinstance(generated, dict):
        out: list[str] = []
        for key in sorted(set(committed) | set(generated), key=str):
            if key not in generated:
                out.append(f"{where}/{key}: only in openapi.yaml")
            elif key not in committed:
                out.append(f"{where}/{key}: missing from openapi.yaml")
            else:
                out.extend(_differences(committed[key], generated[key], f"{where}/{key}"))
        return out
    if committed != generated:
        return [f"{where or '/'}: {committed!r} != {generated!r}"[:300]]
    return []


# --- (1) the committed document is the app's ---------------------------------------------


def test_committed_openapi_yaml_matches_the_app() -> None:
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    generated = create_app().openapi()
    if committed != generated:
        diffs = _differences(committed, generated)
        pytest.fail(
            "openapi.yaml is out of date with app.openapi(): run `make openapi` and commit it.\n"
            + "\n".join(diffs[:20])
            + (f"\n... and {len(diffs) - 20} more" if len(diffs) > 20 else ""),
            pytrace=False,
        )


# --- (2) every /v1 operation -------------------------------------------------------------


def test_v1_operations_are_found() -> None:
    # Guards the parametrized tests below against silently testing nothing.
    assert len(V1_OPERATIONS) >= 10
    assert any(p.values[:2] == ("/v1/scores/pasi", "post") for p in V1_OPERATIONS)


@pytest.mark.parametrize(("path", "method", "op"), V1_OPERATIONS)
def test_every_v1_operation_has_a_summary(path: str, method: str, op: dict[str, Any]) -> None:
    summary = op.get("summary")
    assert isinstance(summary, str), f"{method.upper()} {path} has no summary"
    assert summary.strip()


@pytest.mark.parametrize(("path", "method", "op"), V1_OPERATIONS)
def test_every_v1_error_response_is_problem_json(
    path: str, method: str, op: dict[str, Any]
) -> None:
    errors = {code: r for code, r in op["responses"].items() if str(code).startswith("4")}
    assert errors, f"{method.upper()} {path} declares no 4xx response"
    for code, response in errors.items():
        content = response.get("content", {})
        assert set(content) == {PROBLEM_JSON}, f"{code}: {sorted(content)}"
        schema = _resolve(content[PROBLEM_JSON]["schema"])
        assert schema is SCHEMAS["Problem"], f"{code} does not use the Problem schema"
        assert response.get("description"), f"{code} has no description"


@pytest.mark.parametrize(("path", "method", "op"), V1_OPERATIONS)
def test_every_v1_operation_declares_the_errors_it_can_answer(
    path: str, method: str, op: dict[str, Any]
) -> None:
    declared = {str(code) for code in op["responses"]}
    expected = {"401", "403", "422", "429"}  # every /v1 route needs a key and validates input
    if "requestBody" in op:
        expected |= {"400", "413", "415"}  # body guard: not JSON, too large, not a JSON type
    if "{" in path:
        expected.add("404")
    assert expected <= declared, f"missing {sorted(expected - declared)}"


def test_delete_bodies_carry_no_prefilled_reason() -> None:
    deletes = [p for p in WITH_BODY if p.values[1] == "delete"]
    assert deletes
    for _path, _method, op in (p.values for p in deletes):
        media = op["requestBody"]["content"]["application/json"]
        assert "examples" not in media
        assert "example" not in media
        assert "examples" not in _resolve(media["schema"])


@pytest.mark.parametrize(("path", "method", "op"), WITH_REQUIRED_BODY)
def test_every_v1_request_body_has_an_example(path: str, method: str, op: dict[str, Any]) -> None:
    content = op["requestBody"]["content"]
    assert "application/json" in content
    media = content["application/json"]
    schema = _resolve(media["schema"])
    examples = [*media.get("examples", {}).values(), *schema.get("examples", [])]
    if "example" in media or "example" in schema:
        examples.append(media.get("example", schema.get("example")))
    assert examples, f"{method.upper()} {path}: Swagger UI has no worked example to run"


def test_problem_schema_requires_the_rfc_9457_members() -> None:
    problem = SCHEMAS["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem.get("required", []))
    assert "errors" in problem["properties"]


# --- (3) the scoring request fields are described ----------------------------------------

SCORING_REQUEST_SCHEMAS = (
    "PasiScoreRequest",
    "PasiIn",
    "PasiRegionIn",
    "BsaScoreRequest",
    "DlqiScoreRequest",
    "DlqiIn",
)


@pytest.mark.parametrize("name", SCORING_REQUEST_SCHEMAS)
def test_every_scoring_request_field_has_a_description_or_is_a_nested_object(name: str) -> None:
    properties = SCHEMAS[name]["properties"]
    assert properties
    undescribed = [
        field
        for field, schema in properties.items()
        if not str(schema.get("description", "")).strip()
        and _resolve(schema).get("type") != "object"
    ]
    assert not undescribed, f"{name}: no description for {undescribed}"


def _mentions(description: str, number: float) -> bool:
    text = str(int(number)) if float(number).is_integer() else str(number)
    return re.search(rf"(?<![\d.]){re.escape(text)}(?![\d])", description) is not None


@pytest.mark.parametrize("name", ["PasiRegionIn", "DlqiIn"])
def test_numeric_scoring_fields_state_their_range_in_the_description(name: str) -> None:
    missing = []
    for field, schema in SCHEMAS[name]["properties"].items():
        bounded = _resolve(schema)
        if bounded.get("type") not in ("integer", "number") or "maximum" not in bounded:
            continue
        if not _mentions(str(schema.get("description", "")), bounded["maximum"]):
            missing.append(f"{field} (maximum {bounded['maximum']})")
    assert not missing, f"{name}: the description does not give the range of {missing}"


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [
        ("erythema", 0, 4),
        ("induration", 0, 4),
        ("desquamation", 0, 4),
        ("area_percent", 0, 100),
        ("area_score", 0, 6),
    ],
)
def test_pasi_region_fields_publish_their_bounds(field: str, low: int, high: int) -> None:
    schema = _resolve(SCHEMAS["PasiRegionIn"]["properties"][field])
    assert (schema.get("minimum"), schema.get("maximum")) == (low, high)


@pytest.mark.parametrize("name", SCORING_REQUEST_SCHEMAS)
def test_scoring_request_schemas_forbid_unknown_fields(name: str) -> None:
    assert SCHEMAS[name].get("additionalProperties") is False
