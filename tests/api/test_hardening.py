"""Issue 11's smaller items, each pinned: capped error lists, media types, identifiers that can
be searched and cannot hide characters, failed authentications limited per address, no
Host-echoing redirects, and a private data folder."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.helpers import bearer, problem
from tests.conftest import make_settings

PASI = "/v1/scores/pasi"


def test_a_huge_invalid_body_lists_at_most_100_errors_and_counts_the_rest(
    client: TestClient,
) -> None:
    body = {f"unknown_{n}": n for n in range(20_000)}
    r = client.post(PASI, content=json.dumps(body), headers={"Content-Type": "application/json"})
    answer = problem(r, 422)
    assert len(answer["errors"]) == 100
    assert answer["errors_omitted"] >= 19_900
    assert len(r.content) < 50_000


@pytest.mark.parametrize("media_type", ["Application/JSON", "APPLICATION/json; charset=UTF-8"])
def test_media_types_are_case_insensitive(client: TestClient, media_type: str) -> None:
    r = client.post(PASI, content=b'{"pasi": {}}', headers={"Content-Type": media_type})
    assert r.status_code == 422, r.text  # read as JSON: a validation error, not 415


def test_a_json_body_without_a_content_type_is_415(client: TestClient) -> None:
    r = client.post(PASI, content=b'{"pasi": {}}', headers={"Content-Type": ""})
    problem(r, 415)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("value", "MRN\u200b123"),  # zero-width space
        ("value", "MRN\u202e321"),  # right-to-left override
        ("value", "MRN\x07123"),  # control
        ("system", "urn:a|b"),  # could never be searched as system|value
    ],
    ids=["zero-width", "bidi-override", "control", "pipe-in-system"],
)
def test_identifiers_refuse_characters_that_hide_or_break_them(
    client: TestClient, field: str, value: str
) -> None:
    identifier = {"system": "urn:mrn", "value": "123", field: value}
    r = client.post("/v1/patients", json={"identifiers": [identifier]})
    answer = problem(r, 422)
    assert answer["errors"][0]["pointer"] == f"/identifiers/0/{field}"


def test_identifiers_are_nfc_normalised_so_one_identifier_has_one_spelling(
    client: TestClient,
) -> None:
    composed, decomposed = "Jos\u00e9-1", "Jose\u0301-1"
    r = client.post(
        "/v1/patients", json={"identifiers": [{"system": "urn:n", "value": decomposed}]}
    )
    assert r.status_code == 201, r.text
    assert r.json()["identifiers"][0]["value"] == composed
    again = client.post(
        "/v1/patients", json={"identifiers": [{"system": "urn:n", "value": composed}]}
    )
    problem(again, 409)


def test_failed_authentications_are_limited_per_client_address(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "data", failed_auth_per_minute=3)
    with TestClient(create_app(settings)) as c:
        wrong = bearer("pss_" + "0" * 32 + "_guess")
        statuses = [c.get("/v1/patients", headers=wrong).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


def test_a_trailing_slash_is_not_redirected_with_the_callers_host(client: TestClient) -> None:
    r = client.get("/v1/patients/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers


def test_the_embedded_database_folder_and_file_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh-data"
    settings = make_settings("", data)
    with TestClient(create_app(settings)):
        pass
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "psoriasis.db").stat().st_mode) == 0o600
