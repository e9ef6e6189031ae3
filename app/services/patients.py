"""Patients and their external identifiers, and `visible`: the one place that decides which
patients (and so which assessments, treatments and outcomes) a caller may reach. Every query
that can reach a patient goes through it; never inline the filter."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, Select, bindparam, insert, select, true, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from app.auth.access import Access
from app.db.models import Assessment, Patient, PatientIdentifier, Treatment, table_of
from app.errors import IdentifierInUse, NotFound
from app.schemas.common import Page
from app.schemas.records import Identifier, PatientIn, PatientOut
from app.services.audit import note_organization
from app.services.organizations import organization_for_new_patient
from app.services.pagination import cursor_datetime, cursor_uuid, decode_cursor, encode_cursor

Record = TypeVar("Record", Assessment, Treatment)


_HELD: BindParameter[list[uuid.UUID]] = bindparam("organization_ids", expanding=True)


def visible(access: Access) -> ColumnElement[bool]:
    """The condition on `Patient` that a caller's patients meet: those of the organizations the
    key holds (an admin key: all). Anything else answers exactly as if it did not exist."""
    if access.organization_ids is None:
        return true()
    return Patient.organization_id.in_(sorted(access.organization_ids))


def may_reach(access: Access, organization_id: uuid.UUID | None) -> bool:
    """`visible` for one patient's organization already read: the same rule, in Python."""
    held = access.organization_ids
    return held is None or (organization_id is not None and organization_id in held)


def patient_statements(*columns: Any) -> dict[str, Select[Any]]:
    """`visible` as bound parameters, built once for each shape of access (all organizations,
    one, several), selecting `columns` of the patient `:patient_id` (the first must be its
    organization): every read and write of a patient's records runs such a check first, and
    building the statement per call cost more than running it. Run them with `reach_patient`."""
    base = select(*columns).where(Patient.id == bindparam("patient_id"))
    return {
        "all": base,
        "one": base.where(Patient.organization_id == bindparam("organization_id")),
        "several": base.where(Patient.organization_id.in_(_HELD)),
    }


_PATIENT_EXISTS = patient_statements(Patient.organization_id)


def reach_patient(
    session: Session, access: Access, patient_id: uuid.UUID, statements: dict[str, Select[Any]]
) -> Row[Any]:
    """The row a `patient_statements` check selects, or 404 unless the patient exists and the
    caller may reach it. The patient's organization (the row's first column) is noted for the
    transaction's audit events (`audit.note_organization`)."""
    held = access.organization_ids
    params: dict[str, Any] = {"patient_id": patient_id}
    if held is None:
        shape = "all"
    elif len(held) == 1:
        shape, params["organization_id"] = "one", next(iter(held))
    else:
        shape, params["organization_ids"] = "several", sorted(held)
    row = session.connection().execute(statements[shape], params).first()
    if row is None:
        raise NotFound(f"no patient {patient_id}")
    note_organization(session, patient_id, row[0])
    return row


_ORGANIZATIONS_OF = select(Patient.id, Patient.organization_id).where(
    Patient.id.in_(bindparam("patient_ids", expanding=True))
)


def reachable(session: Session, wanted: list[tuple[Access, uuid.UUID]]) -> list[bool]:
    """`ensure_patient` for many callers' patients at once (several requests' writes done
    together): one query for all, then `may_reach` for each. The organizations of the ones
    reached are noted for the transaction's audit events, as `reach_patient` does."""
    ids = list(dict.fromkeys(patient_id for _, patient_id in wanted))
    found: dict[uuid.UUID, uuid.UUID | None] = dict(
        session.connection().execute(_ORGANIZATIONS_OF, {"patient_ids": ids}).tuples().all()
    )
    reached = []
    for access, patient_id in wanted:
        ok = patient_id in found and may_reach(access, found[patient_id])
        if ok:
            note_organization(session, patient_id, found[patient_id])
        reached.append(ok)
    return reached


def ensure_patient(session: Session, access: Access, patient_id: uuid.UUID) -> None:
    """404 unless the patient exists and the caller may reach it (every read and write of a
    patient's records runs this first)."""
    reach_patient(session, access, patient_id, _PATIENT_EXISTS)


def require_patient(session: Session, access: Access, patient_id: uuid.UUID) -> Patient:
    patient = session.scalars(
        select(Patient).where(Patient.id == patient_id, visible(access))
    ).first()
    if patient is None:
        raise NotFound(f"no patient {patient_id}")
    note_organization(session, patient.id, patient.organization_id)
    return patient


def require_record(
    session: Session, access: Access, model: type[Record], record_id: uuid.UUID
) -> Record:
    """An assessment or treatment of a patient the caller may reach, else 404 as if unknown.
    The patient's organization is noted for the transaction's audit events."""
    found = session.execute(
        select(model, Patient.organization_id)
        .join(Patient, Patient.id == model.patient_id)
        .where(model.id == record_id, visible(access))
    ).first()
    if found is None:
        raise NotFound(f"no {model.__tablename__[:-1]} {record_id}")
    row, organization_id = found
    note_organization(session, row.patient_id, organization_id)
    return row  # type: ignore[no-any-return]


def _out(patient: Patient, identifiers: list[PatientIdentifier]) -> PatientOut:
    return PatientOut(
        id=patient.id,
        organization_id=patient.organization_id,
        identifiers=[Identifier(system=i.system, value=i.value) for i in identifiers],
        sex=patient.sex,
        birth_year=patient.birth_year,
        created_at=patient.created_at,
        created_by=patient.created_by,
    )


def _identifier_holder(
    session: Session, organization_id: uuid.UUID, pairs: list[tuple[str, str]]
) -> PatientIdentifier | None:
    return session.scalars(
        select(PatientIdentifier)
        .where(
            PatientIdentifier.organization_id == organization_id,
            tuple_(PatientIdentifier.system, PatientIdentifier.value).in_(pairs),
        )
        .limit(1)
    ).first()


def _in_use(access: Access, holder: PatientIdentifier) -> IdentifierInUse:
    """The 409 names the holder (always a patient of the caller's own organization), unless
    the key may not read patients: a write-only key learns only that the identifier is taken."""
    identifier = f"{holder.system}|{holder.value}"
    if not access.may_read:
        return IdentifierInUse(
            f"identifier {identifier} already belongs to another patient of this organization"
        )
    return IdentifierInUse(
        f"identifier {identifier} already belongs to patient {holder.patient_id}",
        patient_id=str(holder.patient_id),
    )


NewPatient = tuple[dict[str, Any], list[dict[str, Any]]]


def new_patient_rows(access: Access, organization_id: uuid.UUID, body: PatientIn) -> NewPatient:
    """A new patient's row and identifier rows, not yet written (a batch writes many with
    `insert_patients`, once it has found no holder of the identifiers)."""
    patient = {
        "id": uuid.uuid4(),
        "organization_id": organization_id,
        "sex": body.sex,
        "birth_year": body.birth_year,
        "created_at": datetime.now(UTC),
        "created_by": access.name,
    }
    identifiers = [
        {
            "patient_id": patient["id"],
            "organization_id": organization_id,
            "system": i.system,
            "value": i.value,
            "position": n,
        }
        for n, i in enumerate(body.identifiers)
    ]
    return patient, identifiers


_INSERT_PATIENT = insert(table_of(Patient))
_INSERT_IDENTIFIER = insert(table_of(PatientIdentifier))


def insert_patients(session: Session, rows: list[NewPatient]) -> None:
    """Many `new_patient_rows` in two statements; a taken identifier fails the unique index."""
    if rows:
        connection = session.connection()
        connection.execute(_INSERT_PATIENT, [patient for patient, _ in rows])
        connection.execute(_INSERT_IDENTIFIER, [i for _, ids in rows for i in ids])


def create_patient(session: Session, access: Access, body: PatientIn) -> PatientOut:
    organization_id = organization_for_new_patient(session, access, body.organization_id)
    pairs = [(i.system, i.value) for i in body.identifiers]
    holder = _identifier_holder(session, organization_id, pairs)
    if holder is not None:
        raise _in_use(access, holder)
    patient_values, identifier_values = new_patient_rows(access, organization_id, body)
    patient = Patient(**patient_values)
    identifiers = [PatientIdentifier(**values) for values in identifier_values]
    try:
        with session.begin_nested():
            session.add(patient)
            session.flush()
            session.add_all(identifiers)
            session.flush()
    except IntegrityError:
        # Another writer took the identifier between our check and our insert.
        holder = _identifier_holder(session, organization_id, pairs)
        if holder is None:
            raise
        raise _in_use(access, holder) from None
    return _out(patient, identifiers)


def _identifiers_by_patient(
    session: Session, patient_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[PatientIdentifier]]:
    grouped: dict[uuid.UUID, list[PatientIdentifier]] = defaultdict(list)
    if patient_ids:
        rows = session.scalars(
            select(PatientIdentifier)
            .where(PatientIdentifier.patient_id.in_(patient_ids))
            .order_by(PatientIdentifier.patient_id, PatientIdentifier.position)
        )
        for row in rows:
            grouped[row.patient_id].append(row)
    return grouped


def get_patient(session: Session, access: Access, patient_id: uuid.UUID) -> PatientOut:
    patient = require_patient(session, access, patient_id)
    return _out(patient, _identifiers_by_patient(session, [patient.id])[patient.id])


def parse_identifier_token(token: str) -> tuple[str, str] | None:
    system, sep, value = token.partition("|")
    if not sep or not system or not value:
        return None
    return system, value


def find_by_identifier(
    session: Session, access: Access, system: str, value: str
) -> Page[PatientOut]:
    """Every reachable patient with this identifier: one per organization at most."""
    patients = list(
        session.scalars(
            select(Patient)
            .join(PatientIdentifier, PatientIdentifier.patient_id == Patient.id)
            .where(
                PatientIdentifier.system == system,
                PatientIdentifier.value == value,
                visible(access),
            )
            .order_by(Patient.created_at, Patient.id)
        )
    )
    identifiers = _identifiers_by_patient(session, [p.id for p in patients])
    return Page[PatientOut](items=[_out(p, identifiers[p.id]) for p in patients], next_cursor=None)


def list_patients(
    session: Session, access: Access, limit: int, cursor: str | None
) -> Page[PatientOut]:
    query = (
        select(Patient)
        .where(visible(access))
        .order_by(Patient.created_at, Patient.id)
        .limit(limit + 1)
    )
    if cursor:
        created_at, patient_id = decode_cursor(cursor, 2)
        after = (cursor_datetime(created_at), cursor_uuid(patient_id))
        query = query.where(tuple_(Patient.created_at, Patient.id) > after)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    identifiers = _identifiers_by_patient(session, [p.id for p in rows])
    next_cursor = (
        encode_cursor([rows[-1].created_at.isoformat(), str(rows[-1].id)]) if more else None
    )
    return Page[PatientOut](
        items=[_out(p, identifiers[p.id]) for p in rows], next_cursor=next_cursor
    )


def visible_among(session: Session, access: Access, patient_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these patients the caller may reach (`ensure_patient` for many at once)."""
    if not patient_ids:
        return set()
    return set(
        session.scalars(select(Patient.id).where(Patient.id.in_(patient_ids), visible(access)))
    )


def holders_of(
    session: Session, access: Access, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[uuid.UUID, uuid.UUID]]]:
    """The reachable patients holding each (system, value) identifier, as (patient,
    organization) in `find_by_identifier`'s order (`find_by_identifier` for many at once)."""
    found: dict[tuple[str, str], list[tuple[uuid.UUID, uuid.UUID]]] = defaultdict(list)
    if pairs:
        rows = session.execute(
            select(
                PatientIdentifier.system,
                PatientIdentifier.value,
                Patient.id,
                Patient.organization_id,
            )
            .join(Patient, PatientIdentifier.patient_id == Patient.id)
            .where(
                tuple_(PatientIdentifier.system, PatientIdentifier.value).in_(sorted(set(pairs))),
                visible(access),
            )
            .order_by(Patient.created_at, Patient.id)
        )
        for system, value, patient_id, organization_id in rows.tuples():
            found[(system, value)].append((patient_id, organization_id))
    return found
