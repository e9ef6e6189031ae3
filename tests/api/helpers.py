"""Small builders shared by the API tests: patients, assessments, treatments, paging.

Every function takes the client as its first argument when it talks to the service; both the
in-process `TestClient` and a plain `httpx.Client` pointed at a live server work (the first is a
subclass of the second). Builders that post assert the expected status, so a broken setup fails
loudly where it happens rather than later in the test.
"""

from __future__ import annotations

import copy
import uuid
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

import httpx
from fastapi.testclient import TestClient

from app.auth.keys import ALL_SCOPES, Scope
from app.schemas.scores import PASI_EXAMPLE
from app.services.api_keys import create_key

TRIAL_SYSTEM = "https://trial.example/subject"
MRN_SYSTEM = "https://hospital.example/mrn"
PROBLEM_JSON = "application/problem+json"

REGIONS = ("head_neck", "upper_limbs", "trunk", "lower_limbs")
REGION_WEIGHT_TENTHS = {"head_neck": 1, "upper_limbs": 2, "trunk": 3, "lower_limbs": 4}
#: The clinical content of an assessment: what POST takes and PUT takes (plus `reason`).
ASSESSMENT_CONTENT_FIELDS = (
    "assessed_on",
    "visit",
    "assessor",
    "is_baseline",
    "notes",
    "pasi",
    "iga",
    "bsa_percent",
    "dlqi",
)
TREATMENT_CONTENT_FIELDS = ("agent", "started_on", "ended_on", "doses", "notes")


def _iso(day: date | str) -> str:
    return day.isoformat() if isinstance(day, date) else day


# --- patients ---------------------------------------------------------------------------------


def identifier(value: str, system: str = TRIAL_SYSTEM) -> dict[str, str]:
    return {"system": system, "value": value}


def patient_body(value: str = "S-1", *, system: str = TRIAL_SYSTEM, **extra: Any) -> dict[str, Any]:
    """A patient with one identifier; `extra` adds or overrides fields (e.g. `birth_year`)."""
    return {"identifiers": [identifier(value, system)], **extra}


def new_patient(
    client: httpx.Client, value: str = "S-1", *, system: str = TRIAL_SYSTEM, **extra: Any
) -> dict[str, Any]:
    """Create a patient (asserting 201) and return it as the service answered."""
    r = client.post("/v1/patients", json=patient_body(value, system=system, **extra))
    assert r.status_code == 201, r.text
    return dict(r.json())


# --- PASI inputs ------------------------------------------------------------------------------


def _tenths(pasi: float | int | str | Decimal) -> int:
    scaled = Decimal(str(pasi)) * 10
    if scaled != scaled.to_integral_value() or not 0 <= scaled <= 720:
        raise ValueError(f"PASI {pasi} is not a whole number of tenths from 0 to 72")
    return int(scaled)


@lru_cache(maxsize=1)
def _pasi_combinations() -> dict[int, tuple[tuple[int, int], ...]]:
    """For each reachable PASI (in tenths): one (severity sum, area score) per region."""
    options = sorted({(s, a) for s in range(13) for a in range(7)}, key=lambda p: (p[1], p[0]))
    reachable: dict[int, tuple[tuple[int, int], ...]] = {0: ()}
    for region in REGIONS:
        weight = REGION_WEIGHT_TENTHS[region]
        step: dict[int, tuple[tuple[int, int], ...]] = {}
        for total, chosen in reachable.items():
            for s, a in options:
                step.setdefault(total + weight * s * a, (*chosen, (s, a)))
        reachable = step
    return reachable


def _signs(severity_sum: int) -> dict[str, int]:
    erythema = min(4, severity_sum)
    induration = min(4, severity_sum - erythema)
    return {
        "erythema": erythema,
        "induration": induration,
        "desquamation": severity_sum - erythema - induration,
    }


def pasi_inputs(pasi: float | int | str | Decimal) -> dict[str, Any]:
    """PASI region inputs (signs and `area_score`) that score exactly `pasi`, e.g. 18.6.

    Not every tenth from 0 to 72 can be reached (71.9 cannot); those raise ValueError.
    """
    combination = _pasi_combinations().get(_tenths(pasi))
    if combination is None:
        raise ValueError(f"no PASI inputs score exactly {pasi}")
    return {
        region: {**_signs(s), "area_score": a}
        for region, (s, a) in zip(REGIONS, combination, strict=True)
    }


# --- assessments ------------------------------------------------------------------------------


def assessment_body(
    assessed_on: date | str, *, pasi_level: float | int | str | None = None, **extra: Any
) -> dict[str, Any]:
    """An assessment request body.

    `pasi_level` is the PASI the inputs should score (see `pasi_inputs`); without it the body
    carries `PASI_EXAMPLE`, which scores 28.7. `extra` adds or overrides any field, `pasi`
    included.
    """
    pasi = PASI_EXAMPLE if pasi_level is None else pasi_inputs(pasi_level)
    return {"assessed_on": _iso(assessed_on), "pasi": copy.deepcopy(pasi), **extra}


def new_assessment(
    client: httpx.Client,
    patient_id: str,
    assessed_on: date | str,
    *,
    pasi_level: float | int | str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Record an assessment (asserting 201) and return it as the service answered."""
    r = client.post(
        f"/v1/patients/{patient_id}/assessments",
        json=assessment_body(assessed_on, pasi_level=pasi_level, **extra),
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def assessment_content(assessment: dict[str, Any]) -> dict[str, Any]:
    """The clinical content of a returned assessment (or history version), as POST takes it."""
    return {k: copy.deepcopy(assessment[k]) for k in ASSESSMENT_CONTENT_FIELDS if k in assessment}


def drop_nulls(value: Any) -> Any:
    """`value` with every null-valued object member removed, recursively: the service echoes
    omitted optional inputs as null (a region given `area_score` comes back with
    `"area_percent": null`)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def amend_body(assessment: dict[str, Any], reason: str, **changes: Any) -> dict[str, Any]:
    """A PUT body: the assessment's current content with `changes` applied, plus `reason`."""
    return {**assessment_content(assessment), **changes, "reason": reason}


# --- treatments -------------------------------------------------------------------------------


def treatment_body(
    started_on: date | str, *, agent: str = "UC-MSC infusion", **extra: Any
) -> dict[str, Any]:
    """A treatment course body; `extra` adds or overrides fields (`ended_on`, `doses`...)."""
    return {"agent": agent, "started_on": _iso(started_on), **extra}


def new_treatment(
    client: httpx.Client, patient_id: str, started_on: date | str, **extra: Any
) -> dict[str, Any]:
    """Record a treatment course (asserting 201) and return it as the service answered."""
    r = client.post(
        f"/v1/patients/{patient_id}/treatments", json=treatment_body(started_on, **extra)
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def treatment_content(treatment: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(treatment[k]) for k in TREATMENT_CONTENT_FIELDS if k in treatment}


# --- collections ------------------------------------------------------------------------------


def all_pages(
    client: httpx.Client,
    url: str,
    params: dict[str, Any] | None = None,
    *,
    max_pages: int = 10_000,
) -> list[dict[str, Any]]:
    """Every item of a paginated collection, following `next_cursor` to the end.

    Asserts each page is 200, that no cursor comes back twice (a loop) and that only the last
    page lacks a cursor.
    """
    items: list[dict[str, Any]] = []
    seen_cursors: set[str] = set()
    query = dict(params or {})
    for _ in range(max_pages):
        r = client.get(url, params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert cursor not in seen_cursors, f"cursor {cursor} came back twice"
        seen_cursors.add(cursor)
        query["cursor"] = cursor
    raise AssertionError(f"more than {max_pages} pages at {url}")


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert the response is an RFC 9457 problem with `status`; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body = dict(response.json())
    assert body["status"] == status
    return body


def error_locations(body: dict[str, Any]) -> set[str]:
    """The `pointer`s (body fields) and `parameter`s (query, header, path) a 422 names."""
    return {str(e.get("pointer", e.get("parameter"))) for e in body.get("errors") or []}


# --- callers ----------------------------------------------------------------------------------


def create_api_key(
    client: TestClient, name_prefix: str = "clinician", scopes: frozenset[Scope] = ALL_SCOPES
) -> tuple[str, str]:
    """A new API key in the in-process app's database: (its unique name, its bearer token).

    Keys survive the per-test emptying of tables, so the name gets a random suffix.
    """
    name = f"{name_prefix}-{uuid.uuid4().hex[:8]}"
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    with db.transaction() as session:
        _info, token = create_key(session, name, scopes)
    return name, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
