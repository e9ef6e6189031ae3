"""A real FHIR client library (fhirpy's sync client, over requests) drives the facade on a real
server: find a Patient by identifier, page through its Observations by `next` links, read one
version, create one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient

from tests.api.helpers import TRIAL_SYSTEM, assessment_body, bearer, patient_body
from tests.live import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("fhir-client")
    with LiveServer(f"sqlite:///{data_dir / 'fhir.db'}", data_dir) as live:
        yield live


def test_fhirpy_reads_pages_vreads_and_creates(server: LiveServer) -> None:
    days = ["2021-01-04", "2021-02-01", "2021-03-01", "2021-04-05", "2021-05-03"]
    with httpx.Client(base_url=server.url, headers=bearer(server.admin_key), timeout=30) as admin:
        r = admin.post("/v1/patients", json=patient_body("S-FHIRPY"))
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        for day in days:
            r = admin.post(f"/v1/patients/{pid}/assessments", json=assessment_body(day))
            assert r.status_code == 201, r.text

    client = SyncFHIRClient(f"{server.url}/fhir", authorization=f"Bearer {server.admin_key}")
    patient = client.resources("Patient").search(identifier=f"{TRIAL_SYSTEM}|S-FHIRPY").first()
    assert patient is not None
    assert patient.id == pid

    # Pages of 2: fhirpy follows the `next` links (3 requests) and gathers every entry.
    search = client.resources("Observation").search(patient=pid).limit(2)
    assert search.count() == 5
    observations = search.fetch_all()
    assert [o["effectiveDateTime"] for o in observations] == days

    first = observations[0]
    version: Any = client.execute(f"Observation/{first.id}/_history/1", method="get")
    assert version["meta"]["versionId"] == "1"
    assert version["status"] == "final"

    posted = {k: v for k, v in first.serialize().items() if k not in ("id", "meta")}
    created = client.resource("Observation", **posted)
    created.save()
    assert created.id is not None
    assert created.id != first.id
    assert created["valueQuantity"] == first["valueQuantity"]
    assert search.count() == 6
