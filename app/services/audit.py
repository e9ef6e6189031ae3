"""The audit trail: append-only, hash-chained, written in the request's own transaction so that
a failure to audit fails the request.

Every event names the key (id and name), the action, the HTTP status, the organization and
every patient it touched (`audit_event_patients`). Each event's `chain_hash` is SHA-256 over its
canonical content and the previous event's hash (`app.db.audit_chain`). The chain stays linear
with several workers and replicas because appending is serialized: on PostgreSQL by a
transaction-level advisory lock held until commit (`app.db.chain_lock`: taken when the group
writer opens the transaction, or just before the insert where there is no writer), so the
event read as "previous" is the last committed one and ids follow the chain; on SQLite by the
database's single writer (`BEGIN IMMEDIATE`). `verify_chain` recomputes it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, bindparam, insert, select
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.audit_chain import CHAINED_FIELDS, GENESIS, chain_hash
from app.db.bulk import insert_rows
from app.db.chain_lock import LOCKED, lock_chain
from app.db.group_commit import GROUP_FACTS, MEMBER_FACTS
from app.db.models import Assessment, AuditEvent, AuditEventPatient, Patient, Treatment, table_of
from app.services.pagination import cursor_int, decode_cursor, encode_cursor, utc_parameter


@dataclass(frozen=True, slots=True)
class AuditInfo:
    """What a request touched. `patient_id` is the patient it is about; `patient_ids` the
    further patients a search or list returned."""

    action: str
    patient_id: uuid.UUID | None = None
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None
    patient_ids: tuple[uuid.UUID, ...] = field(default=())

    def patients(self) -> list[uuid.UUID]:
        ids = ([] if self.patient_id is None else [self.patient_id]) + list(self.patient_ids)
        return list(dict.fromkeys(ids))

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "patient_id": None if self.patient_id is None else str(self.patient_id),
            "resource_type": self.resource_type,
            "resource_id": None if self.resource_id is None else str(self.resource_id),
            "patient_ids": [str(p) for p in self.patient_ids],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditInfo:
        def as_uuid(value: Any) -> uuid.UUID | None:
            return None if value is None else uuid.UUID(str(value))

        return cls(
            action=str(data["action"]),
            patient_id=as_uuid(data.get("patient_id")),
            resource_type=data.get("resource_type"),
            resource_id=as_uuid(data.get("resource_id")),
            patient_ids=tuple(uuid.UUID(str(p)) for p in data.get("patient_ids") or ()),
        )


# Built once: building a statement with literal values costs more than running it.
_INSERT_EVENTS = insert(table_of(AuditEvent)).returning(AuditEvent.id, sort_by_parameter_order=True)
_INSERT_PATIENT = insert(table_of(AuditEventPatient))


def _event_with_its_patient() -> Insert:
    """PostgreSQL: an event and its one patient link in one statement (a data-modifying CTE),
    one round trip less while the chain's lock is held. Parameters: the event's columns
    prefixed `e_`, and `link_patient_id`, `link_organization_id`."""
    events, links = table_of(AuditEvent), table_of(AuditEventPatient)
    new_event = (
        insert(events)
        .values(
            {c.name: bindparam(f"e_{c.name}", type_=c.type) for c in events.c if c.name != "id"}
        )
        .returning(events.c.id)
        .cte("new_event")
    )
    return insert(links).from_select(
        ["event_id", "patient_id", "organization_id"],
        select(
            new_event.c.id,
            bindparam("link_patient_id", type_=links.c.patient_id.type),
            bindparam("link_organization_id", type_=links.c.organization_id.type),
        ),
    )


_INSERT_EVENT_WITH_PATIENT = _event_with_its_patient()
_LAST_HASH = select(AuditEvent.chain_hash).order_by(AuditEvent.id.desc()).limit(1)


_ORGANIZATIONS = select(Patient.id, Patient.organization_id).where(
    Patient.id.in_(bindparam("patient_ids", expanding=True))
)
CHUNK = 5000  # ids per query: well under SQLite's 32,766 bound parameters


def _organizations_of(
    session: Session, patient_ids: list[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID | None]:
    """Each patient's organization (None for an id that names no patient), in chunks: a cohort
    read names every patient of a study."""
    found: dict[uuid.UUID, uuid.UUID] = {}
    connection = session.connection()
    for start in range(0, len(patient_ids), CHUNK):
        chunk = patient_ids[start : start + CHUNK]
        found.update(connection.execute(_ORGANIZATIONS, {"patient_ids": chunk}).tuples().all())
    return {p: found.get(p) for p in patient_ids}


_HEAD = "audit.chain_head"
_RECORDED = "audit.recorded"


def _previous_hash(session: Session) -> str:
    """The chain's end. In a group-commit transaction (`app.db.group_commit`) a member's first
    append takes it from the member before it, whose events the group's transaction holds and
    whose lock (SQLite's writer, PostgreSQL's chain lock) it still holds: one statement less
    per request. Anything else reads it."""
    if not session.info.get(_RECORDED):
        head = session.info.get(GROUP_FACTS, {}).get(_HEAD)
        if isinstance(head, str):
            return head
    connection = session.connection()
    if connection.dialect.name == "postgresql" and not session.info.get(LOCKED):
        lock_chain(connection)
    return connection.execute(_LAST_HASH).scalar() or GENESIS


def _appended(session: Session, head: str) -> None:
    """Tell the group this member's chain end, for the member after it. Only an append that
    is the member's first and is not inside a savepoint of its own is certain to stay the end
    for as long as the member's work is kept; after any other, the next member reads the end."""
    first = not session.info.get(_RECORDED)
    session.info[_RECORDED] = True
    certain = first and not session.in_nested_transaction()
    session.info.setdefault(MEMBER_FACTS, {})[_HEAD] = head if certain else None


_READ_ORGANIZATIONS = "audit.patient_organizations"


def note_organization(
    session: Session, patient_id: uuid.UUID, organization_id: uuid.UUID | None
) -> None:
    """A patient's organization as this transaction read it (the access check reads it
    anyway): the transaction's audit events then name it without looking it up again."""
    session.info.setdefault(_READ_ORGANIZATIONS, {})[patient_id] = organization_id


def noted_organizations(session: Session) -> dict[uuid.UUID, uuid.UUID | None]:
    """What `note_organization` noted in this session: a read's, for the audit event that a
    write transaction of its own records after it (`carry_organizations`)."""
    return dict(session.info.get(_READ_ORGANIZATIONS, {}))


def carry_organizations(session: Session, noted: Mapping[uuid.UUID, uuid.UUID | None]) -> None:
    """Let this session's audit events name the organizations another transaction of the
    same request read (the access check of a read, whose event is written after it): the
    organization the request saw is the one it disclosed data of."""
    if noted:
        session.info.setdefault(_READ_ORGANIZATIONS, {}).update(noted)


@dataclass(frozen=True, slots=True)
class Event:
    """One event to append: who (`access`), by which request, what it touched, its status."""

    access: Access
    method: str
    route: str
    info: AuditInfo
    status: int


def record(
    session: Session,
    access: Access,
    method: str,
    route: str,
    info: AuditInfo,
    status: int,
    organization_id: uuid.UUID | None = None,
) -> None:
    """Append one event. Its organization is the one all its patients belong to (or
    `organization_id`, for organization administration), else null."""
    record_events(session, [Event(access, method, route, info, status)], organization_id)


def record_many(
    session: Session,
    access: Access,
    method: str,
    route: str,
    events: list[tuple[AuditInfo, int]],
    organization_id: uuid.UUID | None = None,
) -> None:
    """`record_events` for one request's events (a batch's items)."""
    record_events(
        session,
        [Event(access, method, route, info, status) for info, status in events],
        organization_id,
    )


def record_events(
    session: Session, events: list[Event], organization_id: uuid.UUID | None = None
) -> None:
    """Append events in order, every append goes through here: one lock, one read of the
    chain's end, one lookup of the patients' organizations (those the transaction has not read
    already: `note_organization`) and one insert per table for them all (a batch's items, or
    several requests' events written together). Each event's organization is the one all its
    patients belong to (or `organization_id`), else null."""
    if not events:
        return
    known: Mapping[uuid.UUID, uuid.UUID | None] = session.info.get(_READ_ORGANIZATIONS, {})
    wanted = list(dict.fromkeys(p for e in events for p in e.info.patients()))
    organizations = {**_organizations_of(session, [p for p in wanted if p not in known]), **known}
    prev = _previous_hash(session)
    rows: list[dict[str, Any]] = []
    links: list[list[tuple[uuid.UUID, uuid.UUID | None]]] = []
    for e in events:
        info = e.info
        patients = [(p, organizations[p]) for p in info.patients()]
        orgs = {o for _, o in patients} - {None}
        event: dict[str, Any] = {
            "occurred_at": datetime.now(UTC),
            "key_id": e.access.key_id,
            "key_name": e.access.name,
            "action": info.action,
            "method": e.method,
            "route": e.route,
            "patient_id": info.patient_id,
            "resource_type": info.resource_type,
            "resource_id": info.resource_id,
            "status": e.status,
            "organization_id": organization_id
            if organization_id is not None or len(orgs) != 1
            else orgs.pop(),
            "prev_hash": prev,
        }
        prev = event["chain_hash"] = chain_hash(prev, event, patients)
        rows.append(event)
        links.append(patients)
    _insert_events(session, rows, links)
    _appended(session, prev)


def _insert_events(
    session: Session,
    rows: list[dict[str, Any]],
    links: list[list[tuple[uuid.UUID, uuid.UUID | None]]],
) -> None:
    connection = session.connection()
    if len(rows) == 1 and len(links[0]) == 1 and connection.dialect.name == "postgresql":
        [(patient_id, patient_organization)] = links[0]
        connection.execute(
            _INSERT_EVENT_WITH_PATIENT,
            {
                **{f"e_{name}": value for name, value in rows[0].items()},
                "link_patient_id": patient_id,
                "link_organization_id": patient_organization,
            },
        )
        return
    if len(rows) == 1:  # a single row: no insertmanyvalues bookkeeping
        ids = [connection.execute(_INSERT_EVENTS, rows[0]).scalar_one()]
    else:
        ids = insert_rows(connection, table_of(AuditEvent), rows, returning="id")
    patient_rows = [
        {"event_id": event_id, "patient_id": p, "organization_id": o}
        for event_id, patients in zip(ids, links, strict=True)
        for p, o in patients
    ]
    if patient_rows:
        connection.execute(_INSERT_PATIENT, patient_rows)


_RESOURCE_OF_PARAMETER = {
    "patient_id": "patient",
    "assessment_id": "assessment",
    "treatment_id": "treatment",
    "key_id": "api_key",
}


def _as_uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def refusal(session: Session, action: str, path_params: dict[str, Any]) -> AuditInfo:
    """What a refused request (404, 409, 412, 422, 403 ...) asked for, from its path: the id
    it named and, for an assessment or treatment, whose it is (looked up whatever the caller
    may see: the audit is the operator's, and a probe of another organization's record is
    exactly what it must show)."""
    patient_id = _as_uuid(path_params.get("patient_id"))
    resource_type = resource_id = None
    for name, kind in _RESOURCE_OF_PARAMETER.items():
        value = _as_uuid(path_params.get(name)) if name in path_params else None
        if value is not None:
            resource_type, resource_id = kind, value
    if patient_id is None and resource_type in ("assessment", "treatment"):
        model = Assessment if resource_type == "assessment" else Treatment
        patient_id = session.scalar(select(model.patient_id).where(model.id == resource_id))
    return AuditInfo(action, patient_id, resource_type, resource_id)


@dataclass(frozen=True, slots=True)
class BrokenLink:
    event_id: int
    why: str


def _events_in_order(
    session: Session, batch: int = 1000
) -> Iterator[tuple[AuditEvent, list[tuple[uuid.UUID, uuid.UUID | None]]]]:
    last_id = 0
    while True:
        events = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > last_id)
                .order_by(AuditEvent.id)
                .limit(batch)
            )
        )
        if not events:
            return
        touched: dict[int, list[tuple[uuid.UUID, uuid.UUID | None]]] = defaultdict(list)
        rows = session.execute(
            select(
                AuditEventPatient.event_id,
                AuditEventPatient.patient_id,
                AuditEventPatient.organization_id,
            ).where(AuditEventPatient.event_id.in_([e.id for e in events]))
        )
        for event_id, patient_id, org_id in rows:
            touched[event_id].append((patient_id, org_id))
        for e in events:
            yield e, touched[e.id]
        last_id = events[-1].id


def verify_chain(session: Session) -> tuple[int, BrokenLink | None]:
    """Recompute the chain in id order: how many events verified, and the first broken link
    (an altered event, a removed one, or one whose patients were changed)."""
    prev = GENESIS
    count = 0
    for e, patients in _events_in_order(session):
        if e.prev_hash != prev:
            return count, BrokenLink(
                e.id,
                "its previous hash is not the hash of the event before it "
                "(an event before it was removed or altered)",
            )
        fields = {name: getattr(e, name) for name in CHAINED_FIELDS}
        if chain_hash(prev, fields, patients) != e.chain_hash:
            return count, BrokenLink(e.id, "its content does not match its hash (it was altered)")
        prev = e.chain_hash
        count += 1
    return count, None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    patient_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    key_name: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[AuditEvent]
    patients: dict[int, list[uuid.UUID]]
    next_cursor: str | None


def list_events(session: Session, where: AuditFilter, limit: int, cursor: str | None) -> EventPage:
    """Events in the order they were written, filtered, one keyset page at a time."""
    query = select(AuditEvent).order_by(AuditEvent.id).limit(limit + 1)
    if where.patient_id is not None:
        query = query.where(
            AuditEvent.id.in_(
                select(AuditEventPatient.event_id).where(
                    AuditEventPatient.patient_id == where.patient_id
                )
            )
        )
    if where.key_id is not None:
        query = query.where(AuditEvent.key_id == where.key_id)
    if where.key_name is not None:
        query = query.where(AuditEvent.key_name == where.key_name)
    if where.action is not None:
        query = query.where(AuditEvent.action == where.action)
    since = utc_parameter("since", where.since)
    until = utc_parameter("until", where.until)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        query = query.where(AuditEvent.id > cursor_int(last_id))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(
        rows,
        patients_of_events(session, [r.id for r in rows]),
        encode_cursor([rows[-1].id]) if more else None,
    )


def patients_of_events(session: Session, event_ids: list[int]) -> dict[int, list[uuid.UUID]]:
    touched: dict[int, list[uuid.UUID]] = defaultdict(list)
    if event_ids:
        rows = session.execute(
            select(AuditEventPatient.event_id, AuditEventPatient.patient_id)
            .where(AuditEventPatient.event_id.in_(event_ids))
            .order_by(AuditEventPatient.event_id, AuditEventPatient.patient_id)
        )
        for event_id, patient_id in rows:
            touched[event_id].append(patient_id)
    return touched
