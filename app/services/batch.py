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
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.database import Database
from app.errors import DomainError, InvalidInput, NotFound
from app.schemas.batch import BatchIn, BatchPatient
from app.schemas.records import AssessmentIn, PatientIn
from app.services import audit, idempotency
from app.services.assessments import create_assessment
from app.services.audit import AuditInfo
from app.services.patients import create_patient as create_new_patient
from app.services.patients import ensure_patient, find_by_identifier

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
    made = create_new_patient(
        session,
        access,
        PatientIn(
            identifiers=[ref.identifier],
            sex=ref.create.sex,
            birth_year=ref.create.birth_year,
            organization_id=ref.organization_id,
        ),
    )
    item.outcome.created_patient = made.id
    return made.id  # remembered only once its item is stored (see _run_item)


def _record(session: Session, origin: Origin, info: AuditInfo, status: int) -> None:
    audit.record(session, origin.access, origin.method, origin.route, info, status)


def _scope(origin: Origin, key: str) -> idempotency.KeyScope:
    """An item's key names one request: the batch route and the item's key."""
    return idempotency.KeyScope(
        owner=origin.access.name, method=origin.method, path=f"{origin.route}#{key}", key=key
    )


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
                info = AuditInfo(ITEM_ACTION, out.patient_id, "assessment", out.id)
                if claim is not None:
                    body = json.dumps(
                        {
                            "status": 201,
                            "patient_id": str(out.patient_id),
                            "assessment_id": str(out.id),
                        }
                    )
                    idempotency.complete(
                        session, claim, idempotency.StoredResponse(201, body, {}, info.to_json())
                    )
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
        created = AuditInfo(
            "create-patient", outcome.created_patient, "patient", outcome.created_patient
        )
        _record(session, origin, created, 201)
    _record(session, origin, info, 201)


def _audit_replay(session: Session, origin: Origin, outcome: Outcome) -> None:
    """A replay returns patient data too: audited like the item it replays."""
    info = AuditInfo(
        f"replay-{ITEM_ACTION}", outcome.patient_id, "assessment", outcome.assessment_id
    )
    _record(session, origin, info, outcome.status)


def _refusal(session: Session, origin: Origin, outcome: Outcome) -> None:
    _record(session, origin, AuditInfo(ITEM_ACTION, outcome.patient_id), outcome.status)


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
                known: dict[tuple[Any, ...], uuid.UUID] = {}
                for item in items:
                    _run_item(session, origin, item, known)
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
