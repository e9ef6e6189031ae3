"""The audit trail is complete and tamper-evident (SPEC section 6, "Audit, complete"): every
audited request appends one event to a SHA-256 chain; `verify_chain` and `psoriasis-audit
verify` find the first altered or removed event (or changed touched patient); the chain stays
linear with several workers writing at once; and on PostgreSQL the service role may only INSERT
and SELECT on the audit and history tables.

Tampering is done the way an intruder with the owner's rights would: on PostgreSQL by disabling
the append-only triggers for the change, on SQLite by dropping and recreating them."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from alembic import command
from fastapi.testclient import TestClient
from psycopg import errors as pg_errors
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.cli import audit_main
from app.db.database import Database
from app.db.models import AuditEvent, AuditEventPatient, table_of
from app.services import audit
from app.settings import get_settings
from tests.api.helpers import amend_body, assessment_body, bearer, patient_body
from tests.dbs import POSTGRES_ADMIN_URL, alembic_config, empty_database
from tests.live import LiveServer

SERVICE_ROLE = "psoriasis_service"
EVENTS = table_of(AuditEvent)
EVENT_PATIENTS = table_of(AuditEventPatient)
# The append-only trigger of each table on SQLite, as migrations 0002 and 0004 create it.
SOME_COLUMN = {
    "audit_events": "status",
    "audit_event_patients": "patient_id",
    "record_versions": "version",
}
SQLITE_TRIGGER = (
    "CREATE TRIGGER {table}_append_only BEFORE UPDATE ON {table} "
    "BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END"
)


def _db(client: TestClient) -> Database:
    db: Database = client.app.state.runtime.db  # type: ignore[attr-defined]
    return db


def _verify(db: Database) -> tuple[int, audit.BrokenLink | None]:
    with db.read() as session:
        return audit.verify_chain(session)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    """`psoriasis-audit` reads DATABASE_URL through the cached settings."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _cli_verify(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = audit_main(["verify"])
    return code, capsys.readouterr().out


# --- an in-process workload -------------------------------------------------------------------


class Calls:
    """Requests to audited routes, each asserted to answer the expected status and counted:
    each must leave exactly one event."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.count = 0

    def __call__(self, method: str, url: str, expected: int, **kwargs: Any) -> httpx.Response:
        r = self.client.request(method, url, **kwargs)
        assert r.status_code == expected, (method, url, r.text)
        self.count += 1
        return r


def _workload(client: TestClient) -> Calls:
    """Creates, reads, lists, amendments (one with a stale If-Match), a duplicate, a 404 and
    two 422s, and a read of the audit trail."""
    call = Calls(client)
    p1 = call("POST", "/v1/patients", 201, json=patient_body("CHAIN-1", birth_year=1980)).json()
    p2 = call("POST", "/v1/patients", 201, json=patient_body("CHAIN-2")).json()
    call("POST", "/v1/patients", 409, json=patient_body("CHAIN-1"))
    call("GET", "/v1/patients", 200)
    call("GET", f"/v1/patients/{p1['id']}", 200)
    url1 = f"/v1/patients/{p1['id']}/assessments"
    created = call("POST", url1, 201, json=assessment_body("2024-01-08", iga=4))
    call("POST", f"/v1/patients/{p2['id']}/assessments", 201, json=assessment_body("2024-02-01"))
    call("POST", url1, 422, json={"assessed_on": "not a date", "pasi": {}})
    a1 = created.json()
    a_url = f"/v1/assessments/{a1['id']}"
    amended = call(
        "PUT",
        a_url,
        200,
        json=amend_body(a1, "IGA misread", iga=3),
        headers={"If-Match": created.headers["ETag"]},
    )
    call(
        "PUT",
        a_url,
        412,
        json=amend_body(amended.json(), "a stale edit", iga=2),
        headers={"If-Match": created.headers["ETag"]},
    )
    call("GET", a_url, 200)
    call("GET", f"{a_url}/history", 200)
    call("GET", url1, 200)
    call("GET", f"/v1/patients/{uuid.uuid4()}", 404)
    call("GET", "/v1/patients/not-a-uuid", 422)
    call("GET", "/v1/audit-events", 200, params={"patient_id": p1["id"]})
    return call


@pytest.mark.usefixtures("cli_env")
def test_after_a_mixed_workload_the_chain_verifies_and_holds_one_event_per_request(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _workload(client)
    db = _db(client)
    assert _verify(db) == (calls.count, None)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(EVENTS)) == calls.count

    code, out = _cli_verify(capsys)
    assert code == 0, out
    assert f"intact: {calls.count} events verified" in out


# --- tampering --------------------------------------------------------------------------------


@contextmanager
def _tampering(client: TestClient, backend: str, *tables: str) -> Iterator[Session]:
    """A transaction in which the append-only triggers of `tables` are off (disabled on
    PostgreSQL, dropped on SQLite) and back on before it commits."""
    with _db(client).transaction() as session:
        for table in tables:
            if backend == "postgresql":
                session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                session.execute(text(f"DROP TRIGGER {table}_append_only"))
        yield session
        for table in tables:
            if backend == "postgresql":
                session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            else:
                session.execute(text(SQLITE_TRIGGER.format(table=table)))
    for table in tables:  # the later tests on this database rely on them
        with pytest.raises(DBAPIError, match="append-only"), _db(client).transaction() as s:
            s.execute(text(f"UPDATE {table} SET {SOME_COLUMN[table]} = {SOME_COLUMN[table]}"))


def _events(client: TestClient) -> list[tuple[int, uuid.UUID | None]]:
    """(id, patient_id) of every event, in order."""
    with _db(client).read() as session:
        rows = session.execute(select(EVENTS.c.id, EVENTS.c.patient_id).order_by(EVENTS.c.id))
        return [(event_id, patient) for event_id, patient in rows]


def _a_middle_event_with_a_patient(client: TestClient) -> tuple[int, uuid.UUID]:
    events = _events(client)
    with_patient = [(i, p) for i, p in events[2:-2] if p is not None]
    assert with_patient, events
    event_id, patient = with_patient[len(with_patient) // 2]
    assert patient is not None
    return event_id, patient


def _another_patient(client: TestClient, patient: uuid.UUID) -> uuid.UUID:
    others = {p for _i, p in _events(client) if p is not None and p != patient}
    assert others
    return sorted(others)[0]


def _assert_broken_at(
    client: TestClient, capsys: pytest.CaptureFixture[str], event_id: int, why: str
) -> None:
    ids = [i for i, _p in _events(client)]
    verified, broken = _verify(_db(client))
    assert broken is not None, "the tampering went unnoticed"
    assert broken.event_id == event_id, (broken, ids)
    assert why in broken.why
    assert verified == ids.index(event_id)
    code, out = _cli_verify(capsys)
    assert code == 1, out
    assert f"BROKEN at event {event_id}:" in out


ALTERATIONS = {
    "status": lambda event: {"status": 200 if event.status != 200 else 204},
    "key_name": lambda event: {"key_name": "someone-else"},
    "action": lambda event: {"action": "forged"},
    "occurred_at": lambda event: {"occurred_at": event.occurred_at + timedelta(seconds=1)},
}


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("column", sorted(ALTERATIONS))
def test_altering_one_event_is_detected_at_that_event(
    client: TestClient, backend: str, capsys: pytest.CaptureFixture[str], column: str
) -> None:
    _workload(client)
    event_id, _patient = _a_middle_event_with_a_patient(client)
    with _tampering(client, backend, "audit_events") as session:
        event = session.execute(select(EVENTS).where(EVENTS.c.id == event_id)).one()
        changes = ALTERATIONS[column](event)
        session.execute(update(EVENTS).where(EVENTS.c.id == event_id).values(**changes))
    _assert_broken_at(client, capsys, event_id, "does not match its hash")


@pytest.mark.usefixtures("cli_env")
def test_changing_the_patient_an_event_names_is_detected(
    client: TestClient, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit_events.patient_id` is what GET /v1/audit-events shows as "the patient the
    request was about": pointing it at another patient must break the chain too."""
    _workload(client)
    event_id, patient = _a_middle_event_with_a_patient(client)
    other = _another_patient(client, patient)
    with _tampering(client, backend, "audit_events") as session:
        session.execute(update(EVENTS).where(EVENTS.c.id == event_id).values(patient_id=other))
    _assert_broken_at(client, capsys, event_id, "")


@pytest.mark.usefixtures("cli_env")
def test_deleting_one_event_is_detected_at_the_event_after_it(
    client: TestClient, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _workload(client)
    event_id, _patient = _a_middle_event_with_a_patient(client)
    ids = [i for i, _p in _events(client)]
    following = ids[ids.index(event_id) + 1]
    with _tampering(client, backend, "audit_events", "audit_event_patients") as session:
        session.execute(delete(EVENT_PATIENTS).where(EVENT_PATIENTS.c.event_id == event_id))
        session.execute(delete(EVENTS).where(EVENTS.c.id == event_id))
    _assert_broken_at(client, capsys, following, "previous hash")


def _touch_another(session: Session, event_id: int, patient: uuid.UUID, other: uuid.UUID) -> None:
    session.execute(
        update(EVENT_PATIENTS)
        .where(EVENT_PATIENTS.c.event_id == event_id, EVENT_PATIENTS.c.patient_id == patient)
        .values(patient_id=other)
    )


def _touch_none(session: Session, event_id: int, patient: uuid.UUID, other: uuid.UUID) -> None:
    session.execute(delete(EVENT_PATIENTS).where(EVENT_PATIENTS.c.event_id == event_id))


def _touch_one_more(session: Session, event_id: int, patient: uuid.UUID, other: uuid.UUID) -> None:
    org = session.scalar(
        select(EVENT_PATIENTS.c.organization_id).where(EVENT_PATIENTS.c.event_id == event_id)
    )
    session.execute(
        insert(EVENT_PATIENTS).values(event_id=event_id, patient_id=other, organization_id=org)
    )


def _touch_elsewhere(session: Session, event_id: int, patient: uuid.UUID, other: uuid.UUID) -> None:
    session.execute(
        update(EVENT_PATIENTS)
        .where(EVENT_PATIENTS.c.event_id == event_id)
        .values(organization_id=uuid.uuid4())
    )


TOUCHED_CHANGES: dict[str, Callable[[Session, int, uuid.UUID, uuid.UUID], None]] = {
    "patient replaced": _touch_another,
    "patient removed": _touch_none,
    # INSERT is what even the service role may do: an added row must not pass either.
    "patient added": _touch_one_more,
    "organization changed": _touch_elsewhere,
}


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("change", sorted(TOUCHED_CHANGES))
def test_changing_the_patients_an_event_touched_is_detected_at_that_event(
    client: TestClient, backend: str, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    _workload(client)
    event_id, patient = _a_middle_event_with_a_patient(client)
    other = _another_patient(client, patient)
    with _tampering(client, backend, "audit_event_patients") as session:
        TOUCHED_CHANGES[change](session, event_id, patient, other)
    _assert_broken_at(client, capsys, event_id, "does not match its hash")


# --- PostgreSQL: the service role -------------------------------------------------------------


def _conninfo(url: str, user: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if user is not None:
        parsed = parsed.set(username=user)
    return parsed.render_as_string(hide_password=False)


def _ensure_service_role() -> None:
    with psycopg.connect(_conninfo(POSTGRES_ADMIN_URL), autocommit=True) as conn:
        conn.execute(
            f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
                    CREATE ROLE {SERVICE_ROLE} LOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$
            """
        )


@pytest.fixture
def service_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database migrated by its owner, with the service role granted what it
    may do. Yields the owner's URL."""
    if backend != "postgresql":
        pytest.skip(
            "the service role and its grants exist on PostgreSQL only (SQLite has no roles)"
        )
    _ensure_service_role()
    with empty_database("postgresql", tmp_path) as url:
        config = alembic_config(url)
        config.attributes["service_role"] = SERVICE_ROLE
        command.upgrade(config, "head")
        yield url


def _as_service(url: str) -> str:
    return make_url(url).set(username=SERVICE_ROLE).render_as_string(hide_password=False)


def _in_threads(
    workers: int, jobs: list[Callable[[httpx.Client], httpx.Response]], server: LiveServer
) -> list[httpx.Response]:
    """Run `jobs` on `workers` threads, each with its own client, all released at once; the
    answers come back in job order."""
    chunks = [list(range(w, len(jobs), workers)) for w in range(workers)]
    start = threading.Barrier(workers)
    answers: dict[int, httpx.Response] = {}

    def run(indices: list[int]) -> None:
        with httpx.Client(
            base_url=server.url, headers=bearer(server.admin_key), timeout=60.0
        ) as client:
            start.wait(timeout=30)
            for i in indices:
                answers[i] = jobs[i](client)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(run, c) for c in chunks]:
            future.result()
    return [answers[i] for i in range(len(jobs))]


def _day(n: int) -> str:
    return (date(2018, 1, 1) + timedelta(days=n)).isoformat()


def test_two_workers_as_the_service_role_keep_one_linear_chain(
    service_database: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    expected: list[int] = []  # the status of every audited request made, in order
    with (
        LiveServer(_as_service(service_database), data_dir, workers=2) as server,
        httpx.Client(base_url=server.url, headers=bearer(server.admin_key), timeout=60) as c,
    ):

        def setup(method: str, url: str, status: int, **kwargs: Any) -> httpx.Response:
            r = c.request(method, url, **kwargs)
            assert r.status_code == status, r.text
            expected.append(status)
            return r

        patients = [
            setup("POST", "/v1/patients", 201, json=patient_body(f"LIVE-P{n}")).json()["id"]
            for n in range(4)
        ]
        stale: list[tuple[str, dict[str, Any]]] = []
        for n, pid in enumerate(patients):
            a = setup("POST", f"/v1/patients/{pid}/assessments", 201, json=assessment_body(_day(n)))
            body = amend_body(a.json(), "corrected the visit", visit="Week 0")
            url = f"/v1/assessments/{a.json()['id']}"
            setup("PUT", url, 200, json=body, headers={"If-Match": a.headers["ETag"]})
            stale.append((url, amend_body(a.json(), "a stale correction", visit="Week 1")))

        kinds: list[tuple[int, Callable[[int], Callable[[httpx.Client], httpx.Response]]]] = [
            (201, lambda n: lambda h: h.post("/v1/patients", json=patient_body(f"LIVE-{n}"))),
            (
                201,
                lambda n: (
                    lambda h: h.post(
                        f"/v1/patients/{patients[n % 4]}/assessments",
                        json=assessment_body(_day(10 + n), visit=f"Visit {n}"),
                    )
                ),
            ),
            (200, lambda n: lambda h: h.get(f"/v1/patients/{patients[n % 4]}")),
            (200, lambda n: lambda h: h.get(f"/v1/patients/{patients[n % 4]}/assessments")),
            (200, lambda n: lambda h: h.get("/v1/patients", params={"limit": 5})),
            (404, lambda n: lambda h: h.get(f"/v1/patients/{uuid.uuid4()}")),
            (
                412,
                lambda n: (
                    lambda h: h.put(
                        stale[n % 4][0], json=stale[n % 4][1], headers={"If-Match": '"1"'}
                    )
                ),
            ),
            (
                422,
                lambda n: (
                    lambda h: h.post(
                        f"/v1/patients/{patients[n % 4]}/assessments", json={"assessed_on": "x"}
                    )
                ),
            ),
        ]
        rounds = 18
        jobs = [make(n) for n in range(rounds) for _status, make in kinds]
        wanted = [status for _n in range(rounds) for status, _make in kinds]
        answers = _in_threads(6, jobs, server)
        expected.extend(wanted)
        # The workers really are connected as the service role, not as the owner.
        with psycopg.connect(_conninfo(service_database)) as owner_conn:
            users = owner_conn.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        assert users == [(SERVICE_ROLE,)], users

        failures = [r.text for r in answers if r.status_code >= 500]
        assert not failures, failures[:3]
        got = Counter(r.status_code for r in answers)
        assert got == Counter(wanted), [
            (w, r.status_code, r.text)
            for w, r in zip(wanted, answers, strict=True)
            if w != r.status_code
        ][:3]

    owner = Database(service_database)
    try:
        verified, broken = _verify(owner)
        with owner.read() as session:
            stored = session.scalar(select(func.count()).select_from(EVENTS))
    finally:
        owner.dispose()
    assert broken is None, broken
    assert verified == stored == len(expected)


APPEND_ONLY = ("audit_events", "audit_event_patients", "record_versions")
REFUSED = {
    "UPDATE": "UPDATE {table} SET {column} = {column}",
    "DELETE": "DELETE FROM {table}",
    "TRUNCATE": "TRUNCATE {table}",
    "DISABLE TRIGGER ALL": "ALTER TABLE {table} DISABLE TRIGGER ALL",
    "DISABLE TRIGGER USER": "ALTER TABLE {table} DISABLE TRIGGER USER",
    "DROP TRIGGER": "DROP TRIGGER {table}_append_only ON {table}",
    "DROP TABLE": "DROP TABLE {table}",
}


def _seed_as_service(conn: psycopg.Connection[Any]) -> None:
    """One event (with a touched patient) and one version, written as the service writes them:
    INSERT only."""
    event_id = conn.execute(
        "INSERT INTO audit_events (occurred_at, key_name, action, method, route, status, "
        "prev_hash, chain_hash) VALUES (now(), 'k', 'read-patient', 'GET', '/v1/patients', 200, "
        "%s, %s) RETURNING id",
        ("0" * 64, "a" * 64),
    ).fetchone()
    assert event_id is not None
    conn.execute(
        "INSERT INTO audit_event_patients (event_id, patient_id) VALUES (%s, %s)",
        (event_id[0], uuid.uuid4()),
    )
    conn.execute(
        "INSERT INTO record_versions (resource_type, resource_id, version, action, recorded_at, "
        "recorded_by, entered_in_error, content) VALUES ('assessment', %s, 1, 'create', now(), "
        "'k', false, '{}')",
        (uuid.uuid4(),),
    )


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_the_service_role_may_only_insert_and_select_on_the_audit_and_history(
    service_database: str, table: str
) -> None:
    with psycopg.connect(_conninfo(service_database, SERVICE_ROLE), autocommit=True) as conn:
        _seed_as_service(conn)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
        for what, sql in REFUSED.items():
            statement = sql.format(table=table, column=SOME_COLUMN[table])
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute(statement)
            # Nothing changed: the row is still there.
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,), what
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute("SET session_replication_role = replica")  # would skip triggers


def test_the_service_role_may_change_the_ordinary_tables(service_database: str) -> None:
    with psycopg.connect(_conninfo(service_database, SERVICE_ROLE), autocommit=True) as conn:
        row = conn.execute("SELECT id FROM organizations WHERE name = 'default'").fetchone()
        assert row is not None
        patient = uuid.uuid4()
        conn.execute(
            "INSERT INTO patients (id, organization_id, sex, birth_year, created_at, created_by) "
            "VALUES (%s, %s, 'female', 1980, now(), 'k')",
            (patient, row[0]),
        )
        changed = conn.execute(
            "UPDATE patients SET birth_year = 1981 WHERE id = %s", (patient,)
        ).rowcount
        assert changed == 1
        conn.execute("UPDATE assessments SET version = version")
        conn.execute("UPDATE idempotency_keys SET lease_until = lease_until")
        conn.execute("DELETE FROM idempotency_keys WHERE created_at < now() - interval '2 days'")
