"""Every error is an RFC 9457 problem (`application/problem+json`: type, title, status, detail).

Not JSON is 400 (NaN and Infinity are not JSON, RFC 8259), not a JSON media type is 415, a body
over 1 MiB is 413 (with or without Content-Length), well-formed JSON with invalid values is 422
with `errors: [{"pointer", "detail"}]` naming the field and its rule. Never a 500.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

PASI = "/v1/scores/pasi"
MIB = 1024 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}
PROBLEM_MEMBERS = {"type", "title", "status", "detail"}

VALID: dict[str, Any] = {
    "pasi": {
        "head_neck": {"erythema": 2, "induration": 2, "desquamation": 3, "area_percent": 20},
        "upper_limbs": {"erythema": 3, "induration": 2, "desquamation": 3, "area_percent": 35},
        "trunk": {"erythema": 3, "induration": 3, "desquamation": 3, "area_percent": 40},
        "lower_limbs": {"erythema": 3, "induration": 3, "desquamation": 3, "area_score": 4},
    }
}


@pytest.fixture
def api(client: TestClient) -> Iterator[TestClient]:
    """The authenticated client on an emptied database, but answering a 500 instead of
    raising the server's exception, so a test sees the status a real client would."""
    lenient = TestClient(
        client.app,
        raise_server_exceptions=False,
        headers={"Authorization": client.headers["Authorization"]},
    )
    try:
        yield lenient
    finally:
        lenient.close()


def valid_body() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].split(";")[0].strip() == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body.keys() >= PROBLEM_MEMBERS, body
    assert body["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str), body
        assert body[member].strip(), body
    return body


def assert_invalid(r: Any) -> list[dict[str, Any]]:
    """A 422 problem whose `errors` are `{"pointer", "detail"}` objects; returns them."""
    body = assert_problem(r, 422)
    errors = body.get("errors")
    assert isinstance(errors, list), body
    assert errors, body
    for item in errors:
        assert set(item) == {"pointer", "detail"}, item
        assert item["pointer"] == "" or item["pointer"].startswith("/"), item
        assert isinstance(item["detail"], str), item
        assert item["detail"], item
    return errors


def post_raw(api: TestClient, content: bytes, content_type: str = "application/json") -> Any:
    return api.post(PASI, content=content, headers={"Content-Type": content_type})


# --- 400: not JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"pasi": ',
        b'{"pasi": {"head_neck": {"erythema": 2,}}}',
        b"{'pasi': {}}",
        b'{"pasi": {}} trailing',
        b"pasi",
    ],
    ids=["truncated", "trailing-comma", "single-quotes", "trailing-garbage", "bare-word"],
)
def test_malformed_json_is_rejected_with_400(api: TestClient, content: bytes) -> None:
    assert_problem(post_raw(api, content), 400)


@pytest.mark.parametrize(
    ("value", "literal"),
    [(float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity")],
    ids=["nan", "infinity", "minus-infinity"],
)
def test_nan_and_infinity_literals_are_rejected_with_400(
    api: TestClient, value: float, literal: str
) -> None:
    body = valid_body()
    body["pasi"]["trunk"]["area_percent"] = value
    content = json.dumps(body)  # Python writes the non-JSON literal
    assert f'"area_percent": {literal}' in content
    assert_problem(post_raw(api, content.encode()), 400)


@pytest.mark.parametrize(
    "content",
    [
        b'{"pasi": "\xff"}',
        b'{"pasi": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"pasi": "\xed\xa0\x80"}',  # an encoded surrogate
    ],
    ids=["0xff", "latin-1", "encoded-surrogate"],
)
def test_invalid_utf8_is_rejected_with_400(api: TestClient, content: bytes) -> None:
    assert_problem(post_raw(api, content), 400)


# --- 415: not a JSON media type ---------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"],
)
def test_non_json_content_type_is_rejected_with_415(api: TestClient, content_type: str) -> None:
    assert_problem(post_raw(api, json.dumps(VALID).encode(), content_type), 415)


def test_json_content_type_with_charset_is_accepted(api: TestClient) -> None:
    r = post_raw(api, json.dumps(VALID).encode(), "application/json; charset=utf-8")
    assert r.status_code == 200, r.text


# --- 413: over 1 MiB --------------------------------------------------------------------


def _padded(size: int) -> bytes:
    """A valid scoring body padded with trailing whitespace to exactly `size` bytes."""
    content = json.dumps(VALID).encode()
    return content + b" " * (size - len(content))


def test_body_over_1_mib_is_rejected_with_413(api: TestClient) -> None:
    assert_problem(post_raw(api, _padded(MIB + 1)), 413)


def test_body_of_exactly_1_mib_is_accepted(api: TestClient) -> None:
    r = post_raw(api, _padded(MIB))
    assert r.status_code == 200, r.text


def _chunks(content: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


def test_chunked_body_over_1_mib_without_content_length_is_rejected_with_413(
    api: TestClient,
) -> None:
    r = api.post(PASI, content=_chunks(_padded(MIB + 1)), headers=JSON_HEADERS)
    assert "content-length" not in r.request.headers
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert_problem(r, 413)


def test_chunked_body_under_1_mib_is_accepted(api: TestClient) -> None:
    r = api.post(PASI, content=_chunks(json.dumps(VALID).encode(), 16), headers=JSON_HEADERS)
    assert "content-length" not in r.request.headers
    assert r.status_code == 200, r.text


def test_streamed_body_is_cut_off_at_1_mib_without_reading_the_rest(api: TestClient) -> None:
    """Through ASGI, one 64 KiB message at a time and no Content-Length: the 413 comes once the
    limit is passed, before the client has sent everything."""
    chunk = b" " * (64 * 1024)
    total_chunks = 64  # 4 MiB offered
    sent = 0
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": chunk, "more_body": sent < total_chunks}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PASI,
        "raw_path": PASI.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", api.headers["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def run() -> None:
        await api.app(scope, receive, send)  # type: ignore[arg-type]

    anyio.run(run)
    start = next(m for m in messages if m["type"] == "http.response.start")
    assert start["status"] == 413
    headers = dict(start["headers"])
    assert headers[b"content-type"].split(b";")[0] == b"application/problem+json"
    assert sent <= MIB // len(chunk) + 1, f"read {sent} chunks of {total_chunks}"


# --- 422: well-formed JSON, invalid values ---------------------------------------------


@pytest.mark.parametrize("value", [True, "3", 2.5, -1, 5, None, 1e2], ids=repr)
def test_invalid_severity_is_rejected_with_422_naming_the_pointer_and_range(
    api: TestClient, value: Any
) -> None:
    body = valid_body()
    body["pasi"]["trunk"]["erythema"] = value
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [
        {"pointer": "/pasi/trunk/erythema", "detail": "must be an integer from 0 to 4"}
    ]


@pytest.mark.parametrize(
    ("region", "sign"),
    [("head_neck", "induration"), ("lower_limbs", "desquamation"), ("upper_limbs", "erythema")],
)
def test_invalid_severity_pointer_names_region_and_sign(
    api: TestClient, region: str, sign: str
) -> None:
    body = valid_body()
    body["pasi"][region][sign] = 5
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [
        {"pointer": f"/pasi/{region}/{sign}", "detail": "must be an integer from 0 to 4"}
    ]


def test_unknown_region_is_not_an_allowed_field(api: TestClient) -> None:
    body = valid_body()
    body["pasi"]["neck"] = copy.deepcopy(body["pasi"]["head_neck"])
    errors = assert_invalid(api.post(PASI, json=body))
    assert {"pointer": "/pasi/neck", "detail": "is not an allowed field"} in errors


def test_misspelt_region_is_rejected_not_scored_as_zero(api: TestClient) -> None:
    body = valid_body()
    body["pasi"]["trunks"] = body["pasi"].pop("trunk")
    errors = assert_invalid(api.post(PASI, json=body))
    assert {"pointer": "/pasi/trunks", "detail": "is not an allowed field"} in errors
    assert {"pointer": "/pasi/trunk", "detail": "is required"} in errors


def test_unknown_field_in_a_region_is_not_an_allowed_field(api: TestClient) -> None:
    body = valid_body()
    body["pasi"]["trunk"]["erythma"] = 2
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [{"pointer": "/pasi/trunk/erythma", "detail": "is not an allowed field"}]


def test_unknown_top_level_field_is_not_an_allowed_field(api: TestClient) -> None:
    body = valid_body()
    body["bsa"] = 12
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [{"pointer": "/bsa", "detail": "is not an allowed field"}]


@pytest.mark.parametrize("missing", ["head_neck", "upper_limbs", "trunk", "lower_limbs"])
def test_missing_region_is_required(api: TestClient, missing: str) -> None:
    body = valid_body()
    del body["pasi"][missing]
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [{"pointer": f"/pasi/{missing}", "detail": "is required"}]


def test_missing_sign_is_required(api: TestClient) -> None:
    body = valid_body()
    del body["pasi"]["trunk"]["induration"]
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [{"pointer": "/pasi/trunk/induration", "detail": "is required"}]


def test_both_area_forms_in_one_region_are_rejected(api: TestClient) -> None:
    body = valid_body()
    body["pasi"]["trunk"]["area_score"] = 3
    errors = assert_invalid(api.post(PASI, json=body))
    assert [e["pointer"] for e in errors] == ["/pasi/trunk"]
    assert "area_percent" in errors[0]["detail"]
    assert "area_score" in errors[0]["detail"]


def test_neither_area_form_in_a_region_is_rejected(api: TestClient) -> None:
    body = valid_body()
    del body["pasi"]["trunk"]["area_percent"]
    errors = assert_invalid(api.post(PASI, json=body))
    assert [e["pointer"] for e in errors] == ["/pasi/trunk"]
    assert "area_percent" in errors[0]["detail"]
    assert "area_score" in errors[0]["detail"]


@pytest.mark.parametrize("value", [-0.01, 100.01, -1, 1000, "40", True])
def test_area_percent_out_of_range_names_the_range(api: TestClient, value: Any) -> None:
    body = valid_body()
    body["pasi"]["trunk"]["area_percent"] = value
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [
        {"pointer": "/pasi/trunk/area_percent", "detail": "must be a number from 0 to 100"}
    ]


@pytest.mark.parametrize("value", [12.34567, 0.00001, 99.99999])
def test_area_percent_with_more_than_4_decimal_places_is_rejected(
    api: TestClient, value: float
) -> None:
    body = valid_body()
    body["pasi"]["trunk"]["area_percent"] = value
    errors = assert_invalid(api.post(PASI, json=body))
    assert [e["pointer"] for e in errors] == ["/pasi/trunk/area_percent"]
    assert "4 decimal places" in errors[0]["detail"]


def test_area_percent_with_4_decimal_places_is_accepted(api: TestClient) -> None:
    body = valid_body()
    body["pasi"]["trunk"]["area_percent"] = 12.3456
    r = api.post(PASI, json=body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", [7, -1, 2.5, "3", True])
def test_invalid_area_score_names_the_range(api: TestClient, value: Any) -> None:
    body = valid_body()
    body["pasi"]["lower_limbs"]["area_score"] = value
    errors = assert_invalid(api.post(PASI, json=body))
    assert errors == [
        {"pointer": "/pasi/lower_limbs/area_score", "detail": "must be an integer from 0 to 6"}
    ]


@pytest.mark.parametrize(
    ("content_type", "content"),
    [("application/json", b""), (None, b"")],
    ids=["json-content-type", "no-content-type"],
)
def test_empty_body_is_rejected_with_422(
    api: TestClient, content_type: str | None, content: bytes
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    errors = assert_invalid(api.post(PASI, content=content, headers=headers))
    assert errors == [{"pointer": "", "detail": "is required"}]


@pytest.mark.parametrize("content", [b"[]", b"[1, 2]", json.dumps([VALID]).encode()])
def test_top_level_json_array_is_rejected_with_422(api: TestClient, content: bytes) -> None:
    errors = assert_invalid(post_raw(api, content))
    assert errors == [{"pointer": "", "detail": "must be a JSON object"}]


@pytest.mark.parametrize("content", [b"null", b"3", b'"pasi"', b"true"])
def test_top_level_json_scalar_is_rejected_with_422(api: TestClient, content: bytes) -> None:
    errors = assert_invalid(post_raw(api, content))
    assert [e["pointer"] for e in errors] == [""]


def test_every_invalid_field_is_reported_at_once(api: TestClient) -> None:
    body = valid_body()
    body["pasi"]["head_neck"]["erythema"] = 9
    body["pasi"]["trunk"]["area_percent"] = 101
    body["iga"] = 5
    errors = assert_invalid(api.post(PASI, json=body))
    assert {e["pointer"] for e in errors} == {
        "/pasi/head_neck/erythema",
        "/pasi/trunk/area_percent",
        "/iga",
    }
    assert {"pointer": "/iga", "detail": "must be an integer from 0 to 4"} in errors


# --- Query parameters ---------------------------------------------------------------------


@pytest.fixture
def patient_id(api: TestClient) -> str:
    r = api.post(
        "/v1/patients",
        json={"identifiers": [{"system": "https://trial.example/subject", "value": "S-ERR"}]},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize(
    ("parameter", "value", "allowed"),
    [("clearance", "bogus", "pasi100"), ("relapse", "pasi_42", "npf_50pct_loss")],
)
def test_unknown_outcomes_option_is_rejected_with_422_naming_the_parameter(
    api: TestClient, patient_id: str, parameter: str, value: str, allowed: str
) -> None:
    r = api.get(f"/v1/patients/{patient_id}/outcomes", params={parameter: value})
    body = assert_problem(r, 422)
    first = body["errors"][0]
    assert first["parameter"] == parameter
    assert first["in"] == "query"
    assert allowed in first["detail"]


@pytest.mark.parametrize("value", ["73", "-1", "nan"])
def test_out_of_range_query_parameter_names_its_allowed_range(
    api: TestClient, patient_id: str, value: str
) -> None:
    # SPEC section 2: a 422 names the field and the allowed range (0–72 for a PASI).
    r = api.get(
        f"/v1/patients/{patient_id}/outcomes",
        params={"relapse": "pasi_above", "relapse_threshold": value},
    )
    body = assert_problem(r, 422)
    assert body["errors"][0]["parameter"] == "relapse_threshold"
    assert body["errors"][0]["detail"] == "must be a number from 0 to 72"


def test_malformed_path_id_is_a_422_problem_naming_the_parameter(api: TestClient) -> None:
    body = assert_problem(api.get("/v1/patients/not-a-uuid/outcomes"), 422)
    assert body["errors"][0]["parameter"] == "patient_id"
    assert body["errors"][0]["detail"] == "must be a UUID"


# --- 401, 404, 405 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nope"), ("POST", "/v1/scores/nope"), ("GET", "/nope"), ("GET", "/v2/patients")],
)
def test_unknown_route_is_a_404_problem(api: TestClient, method: str, path: str) -> None:
    assert_problem(api.request(method, path), 404)


def test_unknown_patient_is_a_404_problem(api: TestClient) -> None:
    assert_problem(api.get(f"/v1/patients/{uuid.uuid4()}"), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/scores/pasi", "POST"),
        ("PUT", "/v1/scores/dlqi", "POST"),
        ("DELETE", "/v1/scores/bsa", "POST"),
    ],
)
def test_wrong_method_is_a_405_problem_with_allow(
    api: TestClient, method: str, path: str, allowed: str
) -> None:
    r = api.request(method, path)
    assert_problem(r, 405)
    assert allowed in {m.strip() for m in r.headers["allow"].split(",")}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/patients", {"GET", "POST"}),
        ("PATCH", f"/v1/assessments/{uuid.UUID(int=1)}", {"GET", "PUT", "DELETE"}),
    ],
)
def test_405_allow_lists_every_method_of_the_resource(
    api: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    # RFC 9110 section 15.5.6: Allow MUST list the target resource's supported methods, also
    # when they are served by different routes.
    r = api.request(method, path)
    assert_problem(r, 405)
    listed = {m.strip() for m in r.headers["allow"].split(",")}
    assert allowed <= listed
    assert listed <= allowed | {"HEAD"}


def test_missing_api_key_is_a_401_problem(client: TestClient) -> None:
    with_no_key = TestClient(client.app, raise_server_exceptions=False)
    try:
        r = with_no_key.post(PASI, json=VALID)
    finally:
        with_no_key.close()
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].lower().startswith("bearer")


# --- Never a 500 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"pasi": {"head_neck": {"erythema": 1' + b"0" * 5000 + b"}}}",
        b'{"pasi": {"head_neck": {"erythema": 1, "area_percent": 1e400}}}',
        b'{"pasi": {"head_neck": {"erythema": 1, "area_percent": 1e-400}}}',
        b'{"pasi": "\\ud800"}',
        b'{"pasi": {"head\\u0000neck": {}}}',
        b'{"pasi": {"head_neck": {"erythema": 1, "erythema": "x"}}}',
        b"\xef\xbb\xbf" + json.dumps(VALID).encode(),
    ],
    ids=[
        "deeply-nested-arrays",
        "deeply-nested-objects",
        "5000-digit-integer",
        "overflowing-exponent",
        "underflowing-exponent",
        "lone-surrogate-escape",
        "nul-in-key",
        "duplicate-key",
        "utf8-bom",
    ],
)
def test_hostile_body_is_a_4xx_problem_never_a_500(api: TestClient, content: bytes) -> None:
    r = post_raw(api, content)
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert_problem(r, r.status_code)


def test_a_nul_character_in_a_query_parameter_is_422_naming_it(api: TestClient) -> None:
    body = assert_problem(api.get("/v1/patients", params={"identifier": "urn:x|a\x00b"}), 422)
    assert body["errors"] == [
        {
            "parameter": "identifier",
            "in": "query",
            "detail": "must not contain the NUL character (U+0000)",
        }
    ]
