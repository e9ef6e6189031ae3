"""Outcomes answers are cached per process, keyed by the patient's revision (bumped by
triggers on every write to their records): a cached answer must equal a fresh one, follow every
kind of write at once, and stay correct when another worker (another app instance with its own
cache) writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Uuid, bindparam, text

from app.main import create_app
from app.services.outcomes_cache import BytesCache
from tests.api.helpers import (
    amend_body,
    assessment_body,
    new_assessment,
    new_patient,
    new_treatment,
    treatment_content,
)
from tests.conftest import make_settings
from tests.sql_events import begun, statements


def _cache(client: TestClient) -> BytesCache:
    cache: BytesCache = client.app.state.runtime.outcomes_cache  # type: ignore[attr-defined]
    return cache


@pytest.fixture
def other_worker(database_url: str, data_dir: Path, admin_key: str) -> Iterator[TestClient]:
    """A second app instance on the same database: another worker, with its own cache."""
    app = create_app(make_settings(database_url, data_dir))
    with TestClient(app) as instance:
        instance.headers["Authorization"] = f"Bearer {admin_key}"
        yield instance


@pytest.fixture
def uncached(database_url: str, data_dir: Path, admin_key: str) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url, data_dir, outcomes_cache_bytes=0))
    with TestClient(app) as instance:
        instance.headers["Authorization"] = f"Bearer {admin_key}"
        yield instance


def _outcomes(client: TestClient, pid: str, **params: Any) -> bytes:
    r = client.get(f"/v1/patients/{pid}/outcomes", params=params)
    assert r.status_code == 200, r.text
    return r.content


def _course(client: TestClient) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    pid = new_patient(client, "S-1")["id"]
    treatment = new_treatment(client, pid, "2021-01-01", ended_on="2021-03-01")
    days = ["2021-01-01", "2021-02-01", "2021-03-01", "2021-05-01"]
    levels = [20, 4, 0, 12]
    made = [
        new_assessment(client, pid, d, pasi_level=p, is_baseline=(n == 0))
        for n, (d, p) in enumerate(zip(days, levels, strict=True))
    ]
    return pid, made, treatment


def test_a_repeated_read_is_served_from_the_cache_and_equals_a_fresh_one(
    client: TestClient, uncached: TestClient
) -> None:
    pid, _, _ = _course(client)
    cache = _cache(client)
    first = _outcomes(client, pid)
    hits = cache.hits
    second = _outcomes(client, pid)
    assert cache.hits == hits + 1
    assert second == first == _outcomes(uncached, pid)
    # Options are part of the key: another criterion is another answer, cached apart.
    other = _outcomes(client, pid, clearance="pasi90")
    assert other == _outcomes(uncached, pid, clearance="pasi90")
    assert _outcomes(client, pid) == first


def _writes(
    client: TestClient, pid: str, made: list[dict[str, Any]], treatment: dict[str, Any]
) -> list[Callable[[], Any]]:
    """Every kind of write to a patient's records, each changing the outcomes."""
    second = made[1]

    def amend() -> Any:
        body = amend_body(
            second, "transcription error", pasi=assessment_body("x", pasi_level=6)["pasi"]
        )
        return client.put(f"/v1/assessments/{second['id']}", json=body, headers={"If-Match": '"1"'})

    def mark() -> Any:
        return client.request(
            "DELETE",
            f"/v1/assessments/{made[3]['id']}",
            params={"reason": "wrong patient"},
            headers={"If-Match": '"1"'},
        )

    def add() -> Any:
        return client.post(
            f"/v1/patients/{pid}/assessments", json=assessment_body("2021-06-01", pasi_level=1)
        )

    def batch() -> Any:
        item = {"patient": {"id": pid}, "assessment": assessment_body("2021-07-01", pasi_level=0)}
        return client.post("/v1/assessments:batch", json={"items": [item]})

    def amend_treatment() -> Any:
        body = {**treatment_content(treatment), "ended_on": "2021-02-01", "reason": "stopped early"}
        return client.put(
            f"/v1/treatments/{treatment['id']}", json=body, headers={"If-Match": '"1"'}
        )

    def new_course() -> Any:
        return client.post(
            f"/v1/patients/{pid}/treatments",
            json={"agent": "other", "started_on": "2021-06-15", "ended_on": "2021-06-20"},
        )

    return [amend, mark, add, batch, amend_treatment, new_course]


def test_every_kind_of_write_changes_the_cached_answer_at_once(
    client: TestClient, uncached: TestClient
) -> None:
    pid, made, treatment = _course(client)
    for write in _writes(client, pid, made, treatment):
        before = _outcomes(client, pid)
        assert _outcomes(client, pid) == before  # cached
        r = write()
        assert r.status_code in (200, 201), (write.__name__, r.text)
        after = _outcomes(client, pid)
        assert after == _outcomes(uncached, pid), write.__name__
        assert after != before, write.__name__


def test_a_change_made_outside_the_service_is_seen_at_once(
    client: TestClient, uncached: TestClient
) -> None:
    """The revision is kept by database triggers (migration 0007), not by the service's write
    paths: an UPDATE by hand (a data fix, which bumps no version) still changes the key."""
    pid, made, _ = _course(client)
    before = _outcomes(client, pid)
    assert _outcomes(client, pid) == before  # cached
    engine = client.app.state.runtime.db.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE assessments SET pasi_tenths = 0 WHERE id = :id").bindparams(
                bindparam("id", type_=Uuid)
            ),
            {"id": uuid.UUID(made[0]["id"])},
        )
    after = _outcomes(client, pid)
    assert after == _outcomes(uncached, pid)
    assert after != before


def test_a_write_through_another_worker_is_seen_at_once(
    client: TestClient, other_worker: TestClient
) -> None:
    pid, _, _ = _course(client)
    before = _outcomes(client, pid)
    assert _outcomes(client, pid) == before
    new_assessment(other_worker, pid, "2021-06-01", pasi_level=0)
    after = _outcomes(client, pid)
    assert after != before
    assert after == _outcomes(other_worker, pid)


def test_a_cached_answer_is_still_scoped_and_audited(client: TestClient) -> None:
    pid, _, _ = _course(client)
    _outcomes(client, pid)
    _outcomes(client, pid)  # from the cache
    events = client.get("/v1/audit-events", params={"action": "read-outcomes", "limit": 200})
    assert [e["patient_ids"] for e in events.json()["items"]] == [[pid], [pid]]
    other_org = client.post("/v1/organizations", json={"name": "B"}).json()["id"]
    r = client.post(
        "/v1/api-keys",
        json={"name": "b-reader", "scopes": ["read"], "organizations": [other_org]},
    )
    outsider = {"Authorization": f"Bearer {r.json()['key']}"}
    assert client.get(f"/v1/patients/{pid}/outcomes", headers=outsider).status_code == 404


def test_a_cached_read_is_one_transaction_and_its_event_names_the_organization(
    client: TestClient,
) -> None:
    """A hit runs its access check, revision read and audit event in one transaction (the
    event's organization comes from the probe, not a lookup of its own); the event equals the
    miss's in everything but its time and chain position."""
    pid, _, _ = _course(client)
    _outcomes(client, pid)  # computed and cached
    with begun(client.app.state.runtime.db.engine) as begins:  # type: ignore[attr-defined]
        _outcomes(client, pid)  # from the cache
    assert len(begins) == 1
    items = client.get("/v1/audit-events", params={"action": "read-outcomes", "limit": 200}).json()[
        "items"
    ]
    assert len(items) == 2
    varying = {"id", "occurred_at", "chain_hash", "prev_hash"}
    first, second = ({k: v for k, v in e.items() if k not in varying} for e in items)
    assert first == second
    assert first["organization_id"] is not None


def test_without_a_cache_a_read_is_its_read_and_its_audit_event_only(
    client: TestClient, uncached: TestClient
) -> None:
    """`OUTCOMES_CACHE_BYTES=0`: nothing can be cached, so nothing is probed for: two
    transactions (the read, then its audit event), not an empty write before them."""
    pid, _, _ = _course(client)
    first = _outcomes(uncached, pid)  # (its key verified and kept, as on every later request)
    with begun(uncached.app.state.runtime.db.engine) as begins:  # type: ignore[attr-defined]
        again = _outcomes(uncached, pid)
    assert again == first == _outcomes(client, pid)
    assert len(begins) == 2


def test_a_computed_read_checks_access_only_with_its_probes(client: TestClient) -> None:
    """A miss: the probe in the audit event's transaction found nothing cached; the read's own
    transaction probes again (the revision must be read with the records), and that probe's
    access check is the computation's: it does not check again."""
    pid, _, _ = _course(client)
    engine = client.app.state.runtime.db.engine  # type: ignore[attr-defined]
    with statements(engine, lambda sql: "FROM patients" in sql) as checks:
        _outcomes(client, pid, clearance="pasi90")  # not cached yet
    assert len(checks) == 2
    assert all("patients.revision" in statement for statement in checks)  # both are probes


def test_the_cache_is_bounded_by_size() -> None:
    cache = BytesCache(max_bytes=10)
    cache.put("a", b"12345")
    cache.put("b", b"12345")
    assert cache.get("a") == b"12345"  # now the most recent
    cache.put("c", b"123")
    assert cache.get("b") is None  # the least recently used went
    assert cache.get("a") == b"12345"
    assert cache.get("c") == b"123"
    cache.put("big", b"x" * 11)
    assert cache.get("big") is None
    assert cache.size <= 10
