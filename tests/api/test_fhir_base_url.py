"""FHIR answers carry absolute links (`fullUrl`, `self`, `next`, the CapabilityStatement's
`url`). Built from the Host header they follow whatever a client or proxy sends; with
PUBLIC_BASE_URL set they are the configured address whatever the Host says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings
from tests.api.helpers import new_assessment, new_patient
from tests.conftest import make_settings

PUBLIC = "https://pasi.example.org/scoring"
FORGED = {"Host": "attacker.example"}


@pytest.fixture
def configured(database_url: str, data_dir: Path, admin_key: str) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url, data_dir, public_base_url=PUBLIC + "/"))
    with TestClient(app) as instance:
        instance.headers["Authorization"] = f"Bearer {admin_key}"
        yield instance


def _links(client: TestClient, patient_id: str) -> list[str]:
    bundle = client.get(
        "/fhir/Observation",
        params={"subject": f"Patient/{patient_id}", "_count": 1},
        headers=FORGED,
    ).json()
    found = [link["url"] for link in bundle["link"]]
    found += [entry["fullUrl"] for entry in bundle["entry"]]
    found.append(client.get("/fhir/metadata", headers=FORGED).json()["implementation"]["url"])
    return found


def test_links_use_the_configured_address_whatever_the_host_header(
    client: TestClient, configured: TestClient
) -> None:
    pid = new_patient(client, "S-1")["id"]
    for day in ("2021-01-01", "2021-02-01"):
        new_assessment(client, pid, day)
    links = _links(configured, pid)
    assert len(links) >= 4  # self, next, one entry, metadata
    assert all(link.startswith(PUBLIC + "/fhir") for link in links), links
    assert any("/fhir/Observation?" in link and "subject=" in link for link in links)


def test_without_it_links_follow_the_host_header(client: TestClient) -> None:
    pid = new_patient(client, "S-1")["id"]
    new_assessment(client, pid, "2021-01-01")
    links = _links(client, pid)
    assert all(link.startswith("http://attacker.example/fhir") for link in links), links


@pytest.mark.parametrize("bad", ["pasi.example.org", "ftp://x.example", "https://x.example/?q=1"])
def test_a_malformed_base_url_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValidationError, match="public_base_url"):
        Settings(_env_file=None, public_base_url=bad)  # type: ignore[call-arg]
