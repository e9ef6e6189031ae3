"""Migration 0004 on a database that already holds data (SPEC section 6): the patients and their
identifiers move into an organization named `default`, the non-admin keys are bound to it, the
audit events written before it get their key's id, the patients they touched and a valid hash
chain; the append-only triggers survive (SQLite's batch mode rebuilds tables, which drops their
triggers); the schema is the models'; the app's next event chains onto the migrated ones; and a
downgrade to 0003 keeps every row, after which upgrading again works.

The data is written with plain SQL against the 0003 schema, as the service of that time stored
it (on SQLite: UUIDs as 32 hex digits, timestamps as naive UTC text)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.auth.access import Access
from app.auth.keys import Scope
from app.db.audit_chain import GENESIS
from app.db.database import Database
from app.db.models import Base
from app.services import audit
from app.services.audit import AuditInfo
from tests.dbs import alembic_config, empty_database, selected_backends

ADMIN_KEY = "ops-admin"
CLINIC_KEY = "clinic-nurse"
TRIAL = "https://trial.example/subject"
MRN = "https://hospital.example/mrn"
T0 = datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=UTC)

# What each table held at 0003, compared before the upgrade, after it, and after a downgrade.
LEGACY_COLUMNS = {
    "api_keys": "id, name, scopes, salt, secret_hash, created_at, revoked_at",
    "patients": "id, sex, birth_year, created_at, created_by",
    "patient_identifiers": "id, patient_id, system, value, position",
    "assessments": (
        "id, patient_id, version, entered_in_error, assessed_on, recorded_at, updated_at, visit, "
        "is_baseline, pasi_tenths, bsa_percent, iga, content, scores"
    ),
    "record_versions": (
        "id, resource_type, resource_id, version, action, recorded_at, recorded_by, reason, "
        "entered_in_error, content, scores"
    ),
    "audit_events": (
        "id, occurred_at, key_name, action, method, route, patient_id, resource_type, "
        "resource_id, status"
    ),
}


@dataclass
class Legacy:
    """A database at 0003 holding the data below."""

    url: str
    backend: str
    admin_key: uuid.UUID
    clinic_key: uuid.UUID
    patients: list[uuid.UUID]
    assessments: list[uuid.UUID]
    # (key name, patient or None) of each event, in the order written
    events: list[tuple[str, uuid.UUID | None]] = field(default_factory=list)
    before: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


def _as_uuid(value: Any) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


@contextmanager
def _connect(url: str) -> Iterator[Connection]:
    """One transaction on a connection of its own (committed unless it raises)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with _connect(url) as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _execute(url: str, sql: str, **params: Any) -> None:
    with _connect(url) as conn:
        conn.execute(text(sql), params)


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every 0003 column of every table holding data, in primary-key order."""
    return {
        table: _rows(url, f"SELECT {columns} FROM {table} ORDER BY id")
        for table, columns in LEGACY_COLUMNS.items()
    }


class _Writer:
    """Plain SQL inserts in the 0003 service's storage format."""

    def __init__(self, conn: Connection, backend: str) -> None:
        self.conn = conn
        self.sqlite = backend == "sqlite"

    def id(self, value: uuid.UUID | None) -> str | None:
        return None if value is None else value.hex  # what sa.Uuid stores on SQLite; PG casts

    def ts(self, moment: datetime) -> str:
        utc = moment.astimezone(UTC)
        if self.sqlite:
            return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return utc.isoformat(sep=" ", timespec="microseconds")

    def insert(self, table: str, **values: Any) -> None:
        columns = ", ".join(values)
        marks = ", ".join(f":{c}" for c in values)
        self.conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), values)


def _seed(conn: Connection, backend: str) -> Legacy:
    w = _Writer(conn, backend)
    admin, clinic = uuid.uuid4(), uuid.uuid4()
    for key_id, name, scopes in (
        (admin, ADMIN_KEY, "admin read scores write"),
        (clinic, CLINIC_KEY, "read write"),
    ):
        w.insert(
            "api_keys",
            id=w.id(key_id),
            name=name,
            scopes=scopes,
            salt=uuid.uuid4().hex,
            secret_hash=uuid.uuid4().hex * 2,
            created_at=w.ts(T0 - timedelta(days=30)),
            revoked_at=None,
        )
    p1, p2 = uuid.uuid4(), uuid.uuid4()
    for n, (pid, sex, year) in enumerate(((p1, "female", 1981), (p2, "male", 1969))):
        w.insert(
            "patients",
            id=w.id(pid),
            sex=sex,
            birth_year=year,
            created_at=w.ts(T0 + timedelta(minutes=n)),
            created_by=CLINIC_KEY,
        )
    for pid, system, value, position in (
        (p1, TRIAL, "S-001", 0),
        (p1, MRN, "MRN-4711", 1),
        (p2, TRIAL, "S-002", 0),
    ):
        w.insert(
            "patient_identifiers",
            patient_id=w.id(pid),
            system=system,
            value=value,
            position=position,
        )
    a1, a2 = uuid.uuid4(), uuid.uuid4()
    scores = {"pasi": 18.6, "bsa_percent": 12.5, "iga": 3}
    for aid, pid, version, baseline, day, visit in (
        (a1, p1, 2, True, "2026-01-05", "Baseline"),
        (a2, p2, 1, False, "2026-02-02", "Week 4"),
    ):
        content = {"assessed_on": day, "visit": visit, "is_baseline": baseline, "iga": 3}
        w.insert(
            "assessments",
            id=w.id(aid),
            patient_id=w.id(pid),
            version=version,
            entered_in_error=False,
            assessed_on=day,
            recorded_at=w.ts(T0 + timedelta(hours=1)),
            updated_at=w.ts(T0 + timedelta(hours=version)),
            visit=visit,
            is_baseline=baseline,
            pasi_tenths=186,
            bsa_percent="12.500000",
            iga=3,
            content=json.dumps(content),
            scores=json.dumps(scores),
        )
    for aid, version, action, reason in (
        (a1, 1, "create", None),
        (a2, 1, "create", None),
        (a1, 2, "amend", "transcription error in the trunk area"),
    ):
        w.insert(
            "record_versions",
            resource_type="assessment",
            resource_id=w.id(aid),
            version=version,
            action=action,
            recorded_at=w.ts(T0 + timedelta(hours=version)),
            recorded_by=CLINIC_KEY,
            reason=reason,
            entered_in_error=False,
            content=json.dumps({"assessed_on": "2026-01-05", "version": version}),
            scores=json.dumps(scores),
        )
    legacy = Legacy("", backend, admin, clinic, [p1, p2], [a1, a2])
    events: list[tuple[str, str, str, str, uuid.UUID | None, str | None, uuid.UUID | None, int]] = [
        (CLINIC_KEY, "create-patient", "POST", "/v1/patients", p1, "patient", p1, 201),
        (CLINIC_KEY, "create-patient", "POST", "/v1/patients", p2, "patient", p2, 201),
        (
            CLINIC_KEY,
            "create-assessment",
            "POST",
            "/v1/patients/{patient_id}/assessments",
            p1,
            "assessment",
            a1,
            201,
        ),
        (
            CLINIC_KEY,
            "create-assessment",
            "POST",
            "/v1/patients/{patient_id}/assessments",
            p2,
            "assessment",
            a2,
            201,
        ),
        (ADMIN_KEY, "list-patients", "GET", "/v1/patients", None, None, None, 200),
        (
            CLINIC_KEY,
            "amend-assessment",
            "PUT",
            "/v1/assessments/{assessment_id}",
            p1,
            "assessment",
            a1,
            200,
        ),
        (ADMIN_KEY, "read-patient", "GET", "/v1/patients/{patient_id}", p2, "patient", p2, 200),
    ]
    for n, (key, action, method, route, pid, rtype, rid, status) in enumerate(events):
        w.insert(
            "audit_events",
            occurred_at=w.ts(T0 + timedelta(minutes=5 * n, microseconds=n)),
            key_name=key,
            action=action,
            method=method,
            route=route,
            patient_id=w.id(pid),
            resource_type=rtype,
            resource_id=w.id(rid),
            status=status,
        )
        legacy.events.append((key, pid))
    return legacy


def _insert_identifier(legacy: Legacy, value: str, org: uuid.UUID | None = None) -> None:
    """Give patient 2 one more trial identifier (in `org`: the 0004 schema, else 0003's)."""
    with _connect(legacy.url) as conn:
        w = _Writer(conn, legacy.backend)
        values = {"organization_id": w.id(org)} if org is not None else {}
        w.insert(
            "patient_identifiers",
            patient_id=w.id(legacy.patients[1]),
            system=TRIAL,
            value=value,
            position=1,
            **values,
        )


@pytest.fixture(params=selected_backends(None))
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Legacy]:
    """A database at revision 0003 holding keys, patients, identifiers, assessments, their
    versions and audit events."""
    with empty_database(request.param, tmp_path) as url:
        command.upgrade(alembic_config(url), "0003")
        with _connect(url) as conn:
            seeded = _seed(conn, request.param)
        seeded.url = url
        seeded.before = _snapshot(url)
        yield seeded


def _upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def _default_org(url: str) -> uuid.UUID:
    rows = _rows(url, "SELECT id FROM organizations WHERE name = 'default'")
    assert len(rows) == 1, rows
    org = _as_uuid(rows[0][0])
    assert org is not None
    return org


def _verify(url: str) -> tuple[int, audit.BrokenLink | None]:
    db = Database(url)
    try:
        with db.read() as session:
            return audit.verify_chain(session)
    finally:
        db.dispose()


# --- organizations ----------------------------------------------------------------------------


def test_upgrade_puts_patients_and_identifiers_into_default_and_binds_non_admin_keys(
    legacy: Legacy,
) -> None:
    _upgrade(legacy.url)
    org = _default_org(legacy.url)
    assert _rows(legacy.url, "SELECT name FROM organizations") == [("default",)]

    patients = _rows(legacy.url, "SELECT id, organization_id FROM patients")
    assert {_as_uuid(p) for p, _o in patients} == set(legacy.patients)
    assert {_as_uuid(o) for _p, o in patients} == {org}
    identifiers = _rows(
        legacy.url, "SELECT patient_id, system, value, organization_id FROM patient_identifiers"
    )
    assert len(identifiers) == 3
    assert {_as_uuid(o) for *_rest, o in identifiers} == {org}

    links = _rows(legacy.url, "SELECT key_id, organization_id FROM api_key_organizations")
    assert [(_as_uuid(k), _as_uuid(o)) for k, o in links] == [(legacy.clinic_key, org)]

    # The data written at 0003 is unchanged by the upgrade.
    assert _snapshot(legacy.url) == legacy.before


def test_identifiers_are_unique_per_organization_after_the_upgrade(legacy: Legacy) -> None:
    _upgrade(legacy.url)
    org = _default_org(legacy.url)
    # Patient 2 taking patient 1's trial number in the same organization.
    with pytest.raises(IntegrityError):
        _insert_identifier(legacy, "S-001", org)
    _insert_identifier(legacy, "S-002b", org)


# --- the audit --------------------------------------------------------------------------------


def test_upgrade_chains_the_old_events_with_their_keys_and_patients(legacy: Legacy) -> None:
    _upgrade(legacy.url)
    org = _default_org(legacy.url)
    key_of = {ADMIN_KEY: legacy.admin_key, CLINIC_KEY: legacy.clinic_key}
    rows = _rows(
        legacy.url,
        "SELECT id, key_name, key_id, patient_id, organization_id, prev_hash, chain_hash "
        "FROM audit_events ORDER BY id",
    )
    assert [(name, _as_uuid(p)) for _id, name, _k, p, *_rest in rows] == legacy.events
    prev = GENESIS
    for _id, name, key_id, patient, org_id, prev_hash, chain in rows:
        assert _as_uuid(key_id) == key_of[name]
        assert _as_uuid(org_id) == (None if patient is None else org)
        assert prev_hash == prev
        assert len(chain) == 64
        prev = chain

    touched = _rows(
        legacy.url,
        "SELECT event_id, patient_id, organization_id FROM audit_event_patients ORDER BY event_id",
    )
    expected = [(eid, _as_uuid(p), org) for eid, _n, _k, p, *_rest in rows if p is not None]
    assert [(e, _as_uuid(p), _as_uuid(o)) for e, p, o in touched] == expected

    assert _verify(legacy.url) == (len(legacy.events), None)


def test_an_event_the_app_appends_after_the_upgrade_chains_onto_the_migrated_ones(
    legacy: Legacy,
) -> None:
    _upgrade(legacy.url)
    org = _default_org(legacy.url)
    (last_hash,) = _rows(legacy.url, "SELECT chain_hash FROM audit_events ORDER BY id DESC")[0]
    patient = legacy.patients[0]
    access = Access(
        legacy.clinic_key, CLINIC_KEY, frozenset({Scope.READ, Scope.WRITE}), frozenset({org})
    )
    db = Database(legacy.url)
    try:
        with db.transaction() as session:
            audit.record(
                session,
                access,
                "GET",
                "/v1/patients/{patient_id}",
                AuditInfo("read-patient", patient, "patient", patient),
                200,
            )
    finally:
        db.dispose()

    ((event_id, prev_hash, key_id, org_id),) = _rows(
        legacy.url,
        "SELECT id, prev_hash, key_id, organization_id FROM audit_events "
        "WHERE action = 'read-patient' AND key_name = :name",
        name=CLINIC_KEY,
    )
    assert prev_hash == last_hash
    assert (_as_uuid(key_id), _as_uuid(org_id)) == (legacy.clinic_key, org)
    touched = _rows(
        legacy.url,
        "SELECT patient_id, organization_id FROM audit_event_patients WHERE event_id = :e",
        e=event_id,
    )
    assert [(_as_uuid(p), _as_uuid(o)) for p, o in touched] == [(patient, org)]
    assert _verify(legacy.url) == (len(legacy.events) + 1, None)


APPEND_ONLY_UPDATES = {
    "audit_events": "UPDATE audit_events SET status = 500",
    "audit_event_patients": "UPDATE audit_event_patients SET organization_id = NULL",
    "record_versions": "UPDATE record_versions SET version = version + 10",
}


@pytest.mark.parametrize("table", sorted(APPEND_ONLY_UPDATES))
def test_the_append_only_triggers_still_refuse_updates_after_the_upgrade(
    legacy: Legacy, table: str
) -> None:
    _upgrade(legacy.url)
    with pytest.raises(DBAPIError, match="append-only"):
        _execute(legacy.url, APPEND_ONLY_UPDATES[table])
    if legacy.backend == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            _execute(legacy.url, f"DELETE FROM {table}")
    assert _verify(legacy.url) == (len(legacy.events), None)


def _schema_diffs(url: str) -> list[Any]:
    """What `alembic check` would report: autogenerate's differences from the models."""
    with _connect(url) as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_upgrading_a_database_with_data_builds_exactly_the_models_schema(legacy: Legacy) -> None:
    _upgrade(legacy.url)
    diffs = _schema_diffs(legacy.url)
    assert not diffs, "the upgraded schema differs from app.db.models:\n" + pformat(diffs)


# --- downgrade and upgrade again --------------------------------------------------------------


def test_downgrade_to_0003_keeps_the_data_and_upgrading_again_works(legacy: Legacy) -> None:
    config = alembic_config(legacy.url)
    _upgrade(legacy.url)
    command.downgrade(config, "0003")

    assert _snapshot(legacy.url) == legacy.before
    # The 0003 triggers are back (SQLite's batch rebuild of audit_events must not drop them).
    with pytest.raises(DBAPIError, match="append-only"):
        _execute(legacy.url, "UPDATE audit_events SET status = 500")
    # Identifiers are globally unique again.
    with pytest.raises(IntegrityError):
        _insert_identifier(legacy, "S-001")

    _upgrade(legacy.url)
    assert _snapshot(legacy.url) == legacy.before
    org = _default_org(legacy.url)
    assert {_as_uuid(o) for (o,) in _rows(legacy.url, "SELECT organization_id FROM patients")} == {
        org
    }
    assert _verify(legacy.url) == (len(legacy.events), None)
    diffs = _schema_diffs(legacy.url)
    assert not diffs, "schema differs from the models after a round trip:\n" + pformat(diffs)
