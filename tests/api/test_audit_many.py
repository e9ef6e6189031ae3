"""An audit event may name every patient of a study (a cohort read): the organizations of
tens of thousands of patients are looked up in chunks, under the bound-parameter limits of a
statement (SQLite's default build: 32,766; PostgreSQL's protocol: 65,535)."""

from __future__ import annotations

import sqlite3
import uuid

from fastapi.testclient import TestClient

from app.db.database import Database
from app.services import audit
from tests.api.helpers import new_patient


def test_the_organizations_of_seventy_thousand_patients_are_found(client: TestClient) -> None:
    db: Database = client.app.state.runtime.db  # type: ignore[attr-defined]
    real = [uuid.UUID(new_patient(client, f"S-{n}")["id"]) for n in range(3)]
    ids = [uuid.uuid4() for _ in range(70_000)] + real
    with db.read() as session:
        if db.is_sqlite:  # as SQLite's default build (this machine's allows 250,000)
            raw = session.connection().connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)
        found = audit._organizations_of(session, ids)
    assert len(found) == len(ids)
    assert {p for p, o in found.items() if o is not None} == set(real)
