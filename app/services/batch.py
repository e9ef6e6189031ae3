"""Batch upload: many assessments in one request, each item through the very same steps as a
single POST (`create_assessment`, the idempotency claim/complete/release of `run_once`, one
audit event each).

All the items' writes run in ONE write transaction, each item in a savepoint of its own:
`per_item` keeps every item that succeeded (a failing item rolls back its savepoint only);
`all_or_nothing` rolls the whole transaction back when any item fails, so nothing is stored
(one transaction, rather than validate-then-write: the checks that only the database can make
- a second active baseline, an identifier taken meanwhile - are then covered too).

An item's idempotency key is claimed (`idempotency.claim_in`), its answer stored
(`idempotency.complete`) in that same savepoint: claim, work and stored answer commit together
or not at all, so a failed item leaves no claim ("failures are not remembered") and a crash
leaves nothing half-done. This is `run_once`'s protocol without its two commits per item (one
for the claim, one for the work): 1,000 items commit once. A concurrent request with the same
key waits for the batch's commit (SQLite's write lock, PostgreSQL's unique index) and then
replays the stored answer.

Most items of a trial's batch need nothing but inserts: a new key, a patient that is known
(or new, with an identifier nobody holds), no baseline flag. Those are gathered and written
together, one statement per table for a run of them (`_gather`, `_write_pending`), with their
keys inserted already answered and their audit events appended in order by one
`audit.record_many`. Any other item (a used key, a baseline flag, a patient to refuse or to
decide among several) first flushes what is gathered and then runs alone, as above, so every
item's answer, records and audit events are those it gets one by one (a test compares the
two). If the database refuses a gathered write (a key or identifier taken by a concurrent
request since the batch read them), its savepoint rolls back and those items run alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.database import Database
from app.errors import DomainError, InvalidInput, NotFound
from app.schemas.batch import BatchIn, BatchPatient
from app.schemas.records import AssessmentIn, PatientIn
from app.services import audit, idempotency
from app.services.assessments import (
    NewRows,
    create_assessment,
    insert_assessments,
    new_assessment_rows,
    score_assessment,
)
from app.services.audit import AuditInfo
from app.services.organizations import organization_for_new_patient
from app.services.patients import (
    NewPatient,
    ensure_patient,
    find_by_identifier,
    holders_of,
    insert_patients,
    new_patient_rows,
    visible_among,
)
from app.services.patients import create_patient as create_new_patient

ITEM_ACTION = "create-assessment"
Describe = Callable[[DomainError], tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Origin:
    """The batch request: who sent it, where, and how its errors are described."""

    access: Access
    method: str
    route: str
    action: str
    describe: Describe
    policy: idempotency.Policy


@dataclass(slots=True)
class Outcome:
    index: int
    status: int = 201
    patient_id: uuid.UUID | None = None
    assessment_id: uuid.UUID | None = None
    replayed: bool = False
    problem: dict[str, Any] | None = None
    created_patient: uuid.UUID | None = None

    def result(self) -> dict[str, Any]:
        if self.problem is not None:
            return {"index": self.index, "status": self.status, "problem": self.problem}
        return {
            "index": self.index,
            "status": self.status,
            "patient_id": str(self.patient_id),
            "assessment_id": str(self.assessment_id),
            "replayed": self.replayed,
        }


@dataclass(slots=True)
class _Item:
    index: int
    key: str | None
    patient: BatchPatient
    assessment: AssessmentIn
    digest: str
    claim: idempotency.Claim | None = None
    outcome: Outcome = field(init=False)

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.index)


class _Prefixed(InvalidInput):
    """An item's validation errors, their pointers under `/items/<n>/...`."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(errors[0]["pointer"], errors[0]["detail"])
        self.errors = errors
        self.detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:5])


def _pointer(*parts: object) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _from_validation(prefix: tuple[object, ...], exc: ValidationError) -> _Prefixed:
    return _Prefixed(
        [
            {"pointer": _pointer(*prefix, *e["loc"]), "detail": e["msg"]}
            for e in exc.errors(include_url=False)[:100]
        ]
    )


def _prefixed(prefix: tuple[object, ...], exc: DomainError) -> DomainError:
    if isinstance(exc, InvalidInput) and not isinstance(exc, _Prefixed):
        return _Prefixed(
            [
                {"pointer": _pointer(*prefix) + e["pointer"], "detail": e["detail"]}
                for e in exc.errors
            ]
        )
    return exc


def _fail(origin: Origin, outcome: Outcome, exc: DomainError) -> None:
    outcome.status, outcome.problem = origin.describe(exc)


def _parse(origin: Origin, index: int, raw: Any) -> _Item | Outcome:
    try:
        patient = BatchPatient.model_validate(raw.patient)
    except ValidationError as exc:
        failed = Outcome(index)
        _fail(origin, failed, _from_validation(("items", index, "patient"), exc))
        return failed
    try:
        assessment = AssessmentIn.model_validate(raw.assessment)
    except ValidationError as exc:
        failed = Outcome(index, patient_id=patient.id)
        _fail(origin, failed, _from_validation(("items", index, "assessment"), exc))
        return failed
    digest = idempotency.request_hash(
        {
            "patient": patient.model_dump(mode="json"),
            "assessment": assessment.model_dump(mode="json"),
        }
    )
    return _Item(index, raw.key, patient, assessment, digest)


def _patient_in(ref: BatchPatient) -> PatientIn:
    """The patient an item asks to create when none holds its identifier."""
    assert ref.identifier is not None
    assert ref.create is not None
    return PatientIn(
        identifiers=[ref.identifier],
        sex=ref.create.sex,
        birth_year=ref.create.birth_year,
        organization_id=ref.organization_id,
    )


def _resolve_patient(
    session: Session, origin: Origin, item: _Item, known: dict[tuple[Any, ...], uuid.UUID]
) -> uuid.UUID:
    """The item's patient; `known` remembers the identifiers this batch already resolved to
    a patient it stored (a trial posts many visits per subject). `create_assessment` checks
    the patient again, as for a single POST."""
    ref, access = item.patient, origin.access
    if ref.id is not None:
        ensure_patient(session, access, ref.id)
        return ref.id
    assert ref.identifier is not None
    system, value = ref.identifier.system, ref.identifier.value
    remembered = known.get((system, value, ref.organization_id))
    if remembered is not None:
        return remembered
    found = find_by_identifier(session, access, system, value).items
    if ref.organization_id is not None:
        found = [p for p in found if p.organization_id == ref.organization_id]
    if len(found) > 1:
        raise InvalidInput(
            "/organization_id",
            "is required: patients of several of this key's organizations have this identifier",
        )
    if found:
        known[(system, value, ref.organization_id)] = found[0].id
        return found[0].id
    if ref.create is None:
        raise NotFound(f"no patient with identifier {system}|{value}")
    made = create_new_patient(session, access, _patient_in(ref))
    item.outcome.created_patient = made.id
    return made.id  # remembered only once its item is stored (see _run_item)


def _record(session: Session, origin: Origin, info: AuditInfo, status: int) -> None:
    audit.record(session, origin.access, origin.method, origin.route, info, status)


def _scope(origin: Origin, key: str) -> idempotency.KeyScope:
    """An item's key names one request: the batch route and the item's key."""
    return idempotency.KeyScope(
        owner=origin.access.name, method=origin.method, path=f"{origin.route}#{key}", key=key
    )


def _item_info(patient_id: uuid.UUID, assessment_id: uuid.UUID) -> AuditInfo:
    return AuditInfo(ITEM_ACTION, patient_id, "assessment", assessment_id)


def _created_info(patient_id: uuid.UUID) -> AuditInfo:
    return AuditInfo("create-patient", patient_id, "patient", patient_id)


def _answer(info: AuditInfo) -> idempotency.StoredResponse:
    """A stored item's answer, as its key replays it."""
    body = json.dumps(
        {"status": 201, "patient_id": str(info.patient_id), "assessment_id": str(info.resource_id)}
    )
    return idempotency.StoredResponse(201, body, {}, info.to_json())


def _run_item(
    session: Session, origin: Origin, item: _Item, known: dict[tuple[Any, ...], uuid.UUID]
) -> None:
    outcome = item.outcome
    step: tuple[object, ...] = ("items", item.index, "patient")
    stored: idempotency.StoredResponse | None = None
    try:
        with session.begin_nested():
            claim: idempotency.Claim | None = None
            if item.key is not None:
                got = idempotency.claim_in(
                    session, _scope(origin, item.key), item.digest, origin.policy
                )
                if isinstance(got, idempotency.StoredResponse):
                    stored = got
                else:
                    claim = got
            if stored is None:
                outcome.patient_id = _resolve_patient(session, origin, item, known)
                step = ("items", item.index, "assessment")
                out = create_assessment(session, origin.access, outcome.patient_id, item.assessment)
                outcome.assessment_id = out.id
                info = _item_info(out.patient_id, out.id)
                if claim is not None:
                    idempotency.complete(session, claim, _answer(info))
    except DomainError as exc:
        _fail(origin, outcome, _prefixed(step, exc))
        outcome.assessment_id = None
        if outcome.created_patient is not None:  # rolled back with the savepoint
            outcome.patient_id = outcome.created_patient = None
        return
    if stored is not None:
        body = json.loads(stored.body)
        outcome.status = stored.status
        outcome.patient_id = uuid.UUID(body["patient_id"])
        outcome.assessment_id = uuid.UUID(body["assessment_id"])
        outcome.replayed = True
        _audit_replay(session, origin, outcome)
        return
    if outcome.created_patient is not None:
        ref = item.patient.identifier
        assert ref is not None
        known[(ref.system, ref.value, item.patient.organization_id)] = outcome.created_patient
        _record(session, origin, _created_info(outcome.created_patient), 201)
    _record(session, origin, info, 201)


def _audit_replay(session: Session, origin: Origin, outcome: Outcome) -> None:
    """A replay returns patient data too: audited like the item it replays."""
    info = AuditInfo(
        f"replay-{ITEM_ACTION}", outcome.patient_id, "assessment", outcome.assessment_id
    )
    _record(session, origin, info, outcome.status)


def _refusal(session: Session, origin: Origin, outcome: Outcome) -> None:
    _record(session, origin, AuditInfo(ITEM_ACTION, outcome.patient_id), outcome.status)


@dataclass(frozen=True, slots=True)
class _Known:
    """What the batch's items name, read before any item runs: the patients (by id) the key
    may reach, the reachable holders of their identifiers, and the item keys already used."""

    patients: set[uuid.UUID]
    holders: dict[tuple[str, str], list[tuple[uuid.UUID, uuid.UUID]]]
    used_keys: set[str]


def _read_known(session: Session, origin: Origin, items: list[_Item]) -> _Known:
    ids = [i.patient.id for i in items if i.patient.id is not None]
    pairs = [
        (i.patient.identifier.system, i.patient.identifier.value)
        for i in items
        if i.patient.identifier is not None
    ]
    keys = [i.key for i in items if i.key is not None]
    access = origin.access
    return _Known(
        visible_among(session, access, list(dict.fromkeys(ids))),
        holders_of(session, access, pairs),
        idempotency.used_keys(session, access.name, list(dict.fromkeys(keys))),
    )


@dataclass(slots=True)
class _Pending:
    """Items that need nothing but inserts, gathered to be written together."""

    items: list[_Item] = field(default_factory=list)
    patients: list[NewPatient] = field(default_factory=list)
    rows: list[NewRows] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[AuditInfo, int]] = field(default_factory=list)


def _known_patient(
    item: _Item, read: _Known, known: dict[tuple[Any, ...], uuid.UUID]
) -> uuid.UUID | None:
    """The item's patient if it is settled without a write or an error: a reachable id, or an
    identifier this batch resolved or that exactly one reachable patient holds (else None:
    `_resolve_patient` decides, creates or refuses)."""
    ref = item.patient
    if ref.id is not None:
        return ref.id if ref.id in read.patients else None
    assert ref.identifier is not None
    system, value = ref.identifier.system, ref.identifier.value
    remembered = known.get((system, value, ref.organization_id))
    if remembered is not None:
        return remembered
    found = read.holders.get((system, value), [])
    if ref.organization_id is not None:
        found = [h for h in found if h[1] == ref.organization_id]
    if len(found) != 1:
        return None
    known[(system, value, ref.organization_id)] = found[0][0]
    return found[0][0]


def _new_patient(
    session: Session,
    origin: Origin,
    item: _Item,
    read: _Known,
    known: dict[tuple[Any, ...], uuid.UUID],
    pending: _Pending,
) -> uuid.UUID | None:
    """The patient the item creates, gathered too, when its identifier has no reachable holder
    (so none in the organization it goes into, which the key holds) and the organization is
    settled; else None (`_resolve_patient` answers the item)."""
    ref = item.patient
    if ref.identifier is None or ref.create is None:
        return None
    pair = (ref.identifier.system, ref.identifier.value)
    if pair in read.holders:  # several, or only in other organizations: decided one by one
        return None
    try:
        organization_id = organization_for_new_patient(session, origin.access, ref.organization_id)
    except DomainError:
        return None
    made = new_patient_rows(origin.access, organization_id, _patient_in(ref))
    patient_id: uuid.UUID = made[0]["id"]
    pending.patients.append(made)
    pending.events.append((_created_info(patient_id), 201))
    item.outcome.created_patient = patient_id
    known[(*pair, ref.organization_id)] = patient_id
    return patient_id


def _gather(
    session: Session,
    origin: Origin,
    item: _Item,
    read: _Known,
    known: dict[tuple[Any, ...], uuid.UUID],
    pending: _Pending,
    seen_keys: set[str],
) -> bool:
    """Add the item to `pending` when all it needs is inserts: no baseline flag (the one check
    that reads the patient's records), its patient settled, its key never used. Else False: it
    runs alone, through `_run_item`, after what is pending is written."""
    if item.assessment.is_baseline:
        return False
    if item.key is not None and (item.key in read.used_keys or item.key in seen_keys):
        return False
    patient_id = _known_patient(item, read, known)
    if patient_id is None:
        patient_id = _new_patient(session, origin, item, read, known, pending)
        if patient_id is None:
            return False
    rows = new_assessment_rows(origin.access, patient_id, score_assessment(item.assessment))
    info = _item_info(patient_id, rows[0]["id"])
    if item.key is not None:
        seen_keys.add(item.key)
        answer = _answer(info)
        pending.answers.append(
            idempotency.answered(_scope(origin, item.key), item.digest, origin.policy, answer)
        )
    item.outcome.patient_id, item.outcome.assessment_id = patient_id, info.resource_id
    pending.items.append(item)
    pending.rows.append(rows)
    pending.events.append((info, 201))
    return True


def _write_pending(
    session: Session, origin: Origin, pending: _Pending, known: dict[tuple[Any, ...], uuid.UUID]
) -> None:
    """Write the gathered items with one statement per table, in a savepoint. Should the
    database refuse (a key or identifier taken by a concurrent request since it was read),
    the savepoint rolls back and each item runs alone, to get its own answer."""
    if not pending.items:
        return
    try:
        with session.begin_nested():
            insert_patients(session, pending.patients)
            insert_assessments(session, pending.rows)
            idempotency.insert_answered(session, pending.answers)
            audit.record_many(session, origin.access, origin.method, origin.route, pending.events)
    except IntegrityError:
        phantoms = {patient["id"] for patient, _ in pending.patients}
        for name in [name for name, patient_id in known.items() if patient_id in phantoms]:
            del known[name]
        for item in pending.items:
            outcome = item.outcome
            outcome.patient_id = outcome.assessment_id = outcome.created_patient = None
            _run_item(session, origin, item, known)
    pending.items, pending.patients, pending.rows = [], [], []
    pending.answers, pending.events = [], []


def _run_items(session: Session, origin: Origin, items: list[_Item]) -> None:
    """Every item, in order, each with the result it would get alone; runs of items that need
    only inserts are written together."""
    read = _read_known(session, origin, items)
    known: dict[tuple[Any, ...], uuid.UUID] = {}
    pending, seen_keys = _Pending(), set[str]()
    for item in items:
        if not _gather(session, origin, item, read, known, pending, seen_keys):
            _write_pending(session, origin, pending, known)
            _run_item(session, origin, item, known)
            if item.key is not None:  # claimed now: a later item with it runs alone too
                seen_keys.add(item.key)
    _write_pending(session, origin, pending, known)


class _RollBack(Exception):
    pass


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    status: int  # 200, or 422 when an all_or_nothing batch stored nothing
    results: list[dict[str, Any]]
    patient_ids: tuple[uuid.UUID, ...]


def run_batch(db: Database, origin: Origin, body: BatchIn) -> BatchAnswer:
    parsed = [_parse(origin, n, raw) for n, raw in enumerate(body.items)]
    items = [p for p in parsed if isinstance(p, _Item)]
    outcomes = [p.outcome if isinstance(p, _Item) else p for p in parsed]
    all_or_nothing = body.mode == "all_or_nothing"

    def failed() -> list[Outcome]:
        return [o for o in outcomes if o.problem is not None]

    def touched() -> tuple[uuid.UUID, ...]:
        return tuple(dict.fromkeys(o.patient_id for o in outcomes if o.patient_id is not None))

    try:
        with db.transaction() as session:
            if not (all_or_nothing and failed()):
                _run_items(session, origin, items)
            if all_or_nothing and failed():
                raise _RollBack
            for outcome in failed():
                _refusal(session, origin, outcome)
            _record(session, origin, AuditInfo(origin.action, patient_ids=touched()), 200)
    except _RollBack:
        for outcome in outcomes:  # what it stored was rolled back, patients it created too
            if outcome.created_patient is not None:
                outcome.patient_id = outcome.created_patient = None
        bad = failed()
        with db.transaction() as session:
            for outcome in outcomes:
                if outcome.replayed:  # their audit rolled back with the rest
                    _audit_replay(session, origin, outcome)
            for outcome in bad:
                _refusal(session, origin, outcome)
            _record(session, origin, AuditInfo(origin.action, patient_ids=touched()), 422)
        return BatchAnswer(422, [o.result() for o in bad], touched())
    return BatchAnswer(200, [o.result() for o in outcomes], touched())
