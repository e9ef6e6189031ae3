"""The audit trail and the version history cannot be rewritten, even by SQL that bypasses the
service: the database itself refuses."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.schemas.scores import PASI_EXAMPLE


def _one_patient_with_an_assessment(client: TestClient) -> None:
    r = client.post("/v1/patients", json={"identifiers": [{"system": "urn:t", "value": "ao-1"}]})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = client.post(
        f"/v1/patients/{pid}/assessments", json={"assessed_on": "2020-01-01", "pasi": PASI_EXAMPLE}
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("table", ["audit_events", "record_versions"])
def test_rows_of_the_audit_and_history_cannot_be_updated(client: TestClient, table: str) -> None:
    _one_patient_with_an_assessment(client)
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    column = "status" if table == "audit_events" else "version"
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        session.execute(text(f"UPDATE {table} SET {column} = {column} + 1"))


@pytest.mark.parametrize("table", ["audit_events", "record_versions"])
def test_rows_of_the_audit_and_history_cannot_be_deleted_on_postgresql(
    client: TestClient, table: str, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite keeps DELETE for the test suite's clean-up (no TRUNCATE there)")
    _one_patient_with_an_assessment(client)
    db = client.app.state.runtime.db  # type: ignore[attr-defined]
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        session.execute(text(f"DELETE FROM {table}"))
