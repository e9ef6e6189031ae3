"""The Swagger UI and ReDoc work without internet: their pages load scripts and styles from the
service itself, never from a CDN; the Authorize dialog's pasted key survives a doubled
`Bearer`."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import bearer


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_local_assets(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200
    html = r.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    assert all(s.startswith("/") for s in sources), sources
    assert "cdn" not in html.lower()
    assert "fonts.googleapis" not in html
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 1000


def test_the_swagger_ui_keeps_the_authorization_across_reloads(client: TestClient) -> None:
    assert '"persistAuthorization": true' in client.get("/docs").text


def test_the_authorize_dialog_says_to_paste_only_the_key(client: TestClient) -> None:
    scheme = client.get("/openapi.json").json()["components"]["securitySchemes"]["HTTPBearer"]
    assert "Paste only the API key" in scheme["description"]


def test_a_doubled_bearer_is_recognised(client: TestClient, admin_key: str) -> None:
    r = client.get("/v1/patients", headers={"Authorization": f"Bearer Bearer {admin_key}"})
    assert r.status_code == 200, r.text
    assert client.get("/v1/patients", headers=bearer(admin_key)).status_code == 200
