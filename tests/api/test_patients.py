"""Patients: external identifiers (unique as system + value), lookup, listing, input rules."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import (
    MRN_SYSTEM,
    TRIAL_SYSTEM,
    all_pages,
    error_locations,
    identifier,
    new_patient,
    patient_body,
    problem,
)


def _cursor(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _lookup(client: TestClient, system: str, value: str) -> list[dict[str, object]]:
    r = client.get("/v1/patients", params={"identifier": f"{system}|{value}"})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


# --- create -----------------------------------------------------------------------------------


def test_creating_a_patient_answers_201_with_location_of_the_stored_record(
    client: TestClient,
) -> None:
    body = {
        "identifiers": [identifier("S-001"), identifier("MRN-42", MRN_SYSTEM)],
        "sex": "female",
        "birth_year": 1975,
    }
    r = client.post("/v1/patients", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["Location"] == f"/v1/patients/{created['id']}"
    assert created["identifiers"] == body["identifiers"]
    assert created["sex"] == "female"
    assert created["birth_year"] == 1975
    assert created["created_by"]
    assert created["created_at"].endswith("Z")

    fetched = client.get(r.headers["Location"])
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == created


def test_sex_and_birth_year_are_optional(client: TestClient) -> None:
    created = new_patient(client, "S-001")
    assert created["sex"] is None
    assert created["birth_year"] is None


def test_an_identifier_in_use_is_409_naming_the_patient_that_holds_it(
    client: TestClient,
) -> None:
    holder = new_patient(client, "S-001")
    body = problem(client.post("/v1/patients", json=patient_body("S-001")), 409)
    assert body["patient_id"] == holder["id"]
    assert len(all_pages(client, "/v1/patients")) == 1


def test_one_clashing_identifier_among_several_is_409_and_stores_nothing(
    client: TestClient,
) -> None:
    holder = new_patient(client, "MRN-42", system=MRN_SYSTEM)
    attempt = {
        "identifiers": [
            identifier("S-NEW"),
            identifier("MRN-42", MRN_SYSTEM),
            identifier("OTHER-1", "https://other.example/id"),
        ]
    }
    body = problem(client.post("/v1/patients", json=attempt), 409)
    assert body["patient_id"] == holder["id"]
    # Nothing of the refused patient was kept: its fresh identifiers are still free.
    assert _lookup(client, TRIAL_SYSTEM, "S-NEW") == []
    assert _lookup(client, "https://other.example/id", "OTHER-1") == []
    assert [p["id"] for p in all_pages(client, "/v1/patients")] == [holder["id"]]
    assert new_patient(client, "S-NEW")["id"] != holder["id"]


def test_the_same_value_under_another_system_belongs_to_another_patient(
    client: TestClient,
) -> None:
    first = new_patient(client, "12345", system=TRIAL_SYSTEM)
    second = new_patient(client, "12345", system=MRN_SYSTEM)
    assert first["id"] != second["id"]
    assert [p["id"] for p in _lookup(client, TRIAL_SYSTEM, "12345")] == [first["id"]]
    assert [p["id"] for p in _lookup(client, MRN_SYSTEM, "12345")] == [second["id"]]


def test_repeating_an_identifier_within_one_request_is_422(client: TestClient) -> None:
    body = {"identifiers": [identifier("S-001"), identifier("S-001")]}
    problem(client.post("/v1/patients", json=body), 422)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"identifiers": []}, id="no-identifiers"),
        pytest.param({}, id="identifiers-missing"),
        pytest.param({"identifiers": [{"system": TRIAL_SYSTEM}]}, id="value-missing"),
        pytest.param({"identifiers": [{"system": "", "value": "S-1"}]}, id="empty-system"),
        pytest.param({"identifiers": [{"system": TRIAL_SYSTEM, "value": ""}]}, id="empty-value"),
        pytest.param({"identifiers": [{"system": TRIAL_SYSTEM, "value": 1}]}, id="value-not-str"),
        pytest.param(patient_body(sex="f"), id="unknown-sex"),
    ],
)
def test_invalid_patient_bodies_are_422_and_store_nothing(
    client: TestClient, body: dict[str, object]
) -> None:
    problem(client.post("/v1/patients", json=body), 422)
    assert all_pages(client, "/v1/patients") == []


@pytest.mark.parametrize("field", ["name", "family_name", "given", "address"])
def test_names_and_other_unknown_fields_are_refused(client: TestClient, field: str) -> None:
    body = problem(client.post("/v1/patients", json=patient_body(**{field: "Jane Doe"})), 422)
    assert f"/{field}" in error_locations(body)
    assert all_pages(client, "/v1/patients") == []


def test_identifier_system_and_value_are_at_most_255_characters(client: TestClient) -> None:
    long_system = "https://x.example/" + "s" * (255 - len("https://x.example/"))
    assert len(long_system) == 255
    new_patient(client, "v" * 255, system=long_system)

    body = problem(client.post("/v1/patients", json=patient_body("S-1", system="s" * 256)), 422)
    assert "/identifiers/0/system" in error_locations(body)
    body = problem(client.post("/v1/patients", json=patient_body("v" * 256)), 422)
    assert "/identifiers/0/value" in error_locations(body)


def test_birth_year_in_the_future_is_422(client: TestClient) -> None:
    # The next year everywhere on Earth (UTC+14 reaches the new year first).
    next_year = datetime.now(timezone(timedelta(hours=14))).year + 1
    body = problem(client.post("/v1/patients", json=patient_body(birth_year=next_year)), 422)
    assert "/birth_year" in error_locations(body)


def test_birth_year_this_year_is_accepted(client: TestClient) -> None:
    this_year = datetime.now(UTC).year
    assert new_patient(client, birth_year=this_year)["birth_year"] == this_year


@pytest.mark.parametrize("birth_year", [1899, "1975", 1975.0, True])
def test_birth_year_must_be_an_integer_from_1900(client: TestClient, birth_year: object) -> None:
    body = problem(client.post("/v1/patients", json=patient_body(birth_year=birth_year)), 422)
    assert "/birth_year" in error_locations(body)


# --- lookup by identifier ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("identifier=https://trial.example/subject|S-001", id="raw-pipe"),
        pytest.param("identifier=https://trial.example/subject%7CS-001", id="encoded-pipe-upper"),
        pytest.param("identifier=https://trial.example/subject%7cS-001", id="encoded-pipe-lower"),
        pytest.param(
            "identifier=" + quote("https://trial.example/subject|S-001", safe=""),
            id="fully-encoded",
        ),
    ],
)
def test_lookup_by_identifier_accepts_the_pipe_raw_or_percent_encoded(
    client: TestClient, query: str
) -> None:
    wanted = new_patient(client, "S-001")
    new_patient(client, "S-002")
    r = client.get(f"/v1/patients?{query}")
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [wanted], "next_cursor": None}


def test_lookup_finds_a_patient_by_any_of_its_identifiers(client: TestClient) -> None:
    r = client.post(
        "/v1/patients",
        json={"identifiers": [identifier("S-001"), identifier("MRN-42", MRN_SYSTEM)]},
    )
    assert r.status_code == 201, r.text
    patient_id = r.json()["id"]
    assert [p["id"] for p in _lookup(client, MRN_SYSTEM, "MRN-42")] == [patient_id]
    assert [p["id"] for p in _lookup(client, TRIAL_SYSTEM, "S-001")] == [patient_id]


def test_a_value_containing_a_pipe_is_found(client: TestClient) -> None:
    wanted = new_patient(client, "A|B")
    assert [p["id"] for p in _lookup(client, TRIAL_SYSTEM, "A|B")] == [wanted["id"]]


def test_lookup_matches_system_and_value_exactly(client: TestClient) -> None:
    new_patient(client, "S-001")
    assert _lookup(client, TRIAL_SYSTEM, "S-00") == []
    assert _lookup(client, TRIAL_SYSTEM, "s-001") == []
    assert _lookup(client, TRIAL_SYSTEM + "/", "S-001") == []
    assert _lookup(client, MRN_SYSTEM, "S-001") == []


def test_lookup_with_no_match_is_200_with_no_items(client: TestClient) -> None:
    r = client.get("/v1/patients", params={"identifier": f"{TRIAL_SYSTEM}|nobody"})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("S-001", id="no-pipe"),
        pytest.param("|S-001", id="no-system"),
        pytest.param(f"{TRIAL_SYSTEM}|", id="no-value"),
        pytest.param("|", id="pipe-only"),
        pytest.param("", id="empty"),
    ],
)
def test_a_malformed_identifier_parameter_is_422(client: TestClient, value: str) -> None:
    body = problem(client.get("/v1/patients", params={"identifier": value}), 422)
    assert "identifier" in error_locations(body)


# --- read one ---------------------------------------------------------------------------------


def test_an_unknown_patient_is_404(client: TestClient) -> None:
    problem(client.get("/v1/patients/00000000-0000-4000-8000-000000000000"), 404)


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-4000-8000-00000000000"])
def test_a_patient_id_that_is_not_a_uuid_is_422(client: TestClient, bad_id: str) -> None:
    problem(client.get(f"/v1/patients/{bad_id}"), 422)


# --- listing ----------------------------------------------------------------------------------


def test_listing_pages_through_every_patient_exactly_once_in_creation_order(
    client: TestClient,
) -> None:
    created = [new_patient(client, f"S-{n:03d}")["id"] for n in range(7)]

    pages = []
    params: dict[str, object] = {"limit": 3}
    while True:
        r = client.get("/v1/patients", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append([p["id"] for p in page["items"]])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [pid for page in pages for pid in page] == created


def test_a_listing_that_fits_one_page_has_no_next_cursor(client: TestClient) -> None:
    for n in range(3):
        new_patient(client, f"S-{n}")
    r = client.get("/v1/patients", params={"limit": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 3
    assert r.json()["next_cursor"] is None


def test_the_default_page_holds_50_patients(client: TestClient) -> None:
    created = [new_patient(client, f"S-{n:03d}")["id"] for n in range(51)]
    r = client.get("/v1/patients")
    assert r.status_code == 200, r.text
    assert [p["id"] for p in r.json()["items"]] == created[:50]
    assert r.json()["next_cursor"] is not None
    assert [p["id"] for p in all_pages(client, "/v1/patients")] == created


def test_an_empty_listing_is_200_with_no_items(client: TestClient) -> None:
    r = client.get("/v1/patients")
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("limit", [201, 0, -1, "ten"])
def test_page_size_outside_1_to_200_is_422(client: TestClient, limit: object) -> None:
    body = problem(client.get("/v1/patients", params={"limit": limit}), 422)
    assert "limit" in error_locations(body)


def test_page_size_200_is_allowed(client: TestClient) -> None:
    r = client.get("/v1/patients", params={"limit": 200})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!!", id="not-base64"),
        pytest.param(_cursor({"a": 1}), id="not-a-list"),
        pytest.param(_cursor(["2024-01-01T00:00:00+00:00"]), id="too-short"),
        pytest.param(_cursor(["yesterday", "not-a-uuid"]), id="bad-values"),
        pytest.param(_cursor([1, 2]), id="wrong-types"),
        pytest.param(
            _cursor(["2024-01-01T00:00:00", "00000000-0000-4000-8000-000000000000"]),
            id="timestamp-without-offset",
        ),
        pytest.param(
            _cursor(["0001-01-01T00:00:00-14:00", "zz"]),
            id="bad-uuid-after-valid-timestamp",
        ),
        pytest.param("x" * 501, id="too-long"),
    ],
)
def test_a_cursor_the_service_did_not_issue_is_422(client: TestClient, cursor: str) -> None:
    new_patient(client)
    body = problem(client.get("/v1/patients", params={"cursor": cursor}), 422)
    assert "cursor" in error_locations(body)
