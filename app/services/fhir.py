"""FHIR R4 facade use cases: the v1 services' records served and taken as FHIR resources.

Reads and the create go through the same service functions as the v1 API (so organization
scoping, scores and rules are exactly the v1 ones); the mapping is `app.formats.fhir`'s. Ids
that are not UUIDs answer 404, like unknown ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Assessment, Patient
from app.errors import InvalidInput, InvalidParameter, NotFound
from app.formats import fhir
from app.schemas import examples
from app.schemas.records import AssessmentIn, AssessmentOut, PatientOut
from app.services import assessments, patients, versioning
from app.services.assessments import CONTENT_FIELDS
from app.services.patients import visible
from app.services.scoring import compute_scores

MAX_COUNT = 200
DEFAULT_COUNT = 50
# Versions served by one `_history` answer (records rarely have more than a handful).
MAX_HISTORY = 1000


def _id(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} {raw}") from None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _patient(out: PatientOut) -> dict[str, Any]:
    return fhir.patient_resource(
        str(out.id),
        [{"system": i.system, "value": i.value} for i in out.identifiers],
        out.sex,
        out.birth_year,
        str(out.organization_id),
        last_updated=_aware(out.created_at),
    )


def _observation(out: AssessmentOut) -> dict[str, Any]:
    entered_in_error = out.status == "entered-in-error"
    record = fhir.AssessmentRecord(
        id=str(out.id),
        patient_id=str(out.patient_id),
        version=out.version,
        # Marking entered-in-error is terminal, so an active record past version 1 was amended.
        amended=out.version > 1 and not entered_in_error,
        entered_in_error=entered_in_error,
        recorded_at=_aware(out.recorded_at),
        content=out.model_dump(mode="json", include=CONTENT_FIELDS),
        scores=out.scores.model_dump(mode="json"),
        updated_at=_aware(out.updated_at),
    )
    return fhir.assessment_observation(record)


# ----------------------------------------------------------------------------- Patient


def read_patient(session: Session, access: Access, raw_id: str) -> tuple[dict[str, Any], uuid.UUID]:
    patient_id = _id(raw_id, "patient")
    return _patient(patients.get_patient(session, access, patient_id)), patient_id


def search_patients(
    session: Session, access: Access, identifier: str, self_url: str, base_url: str
) -> tuple[dict[str, Any], tuple[uuid.UUID, ...]]:
    pair = patients.parse_identifier_token(identifier)
    if pair is None:
        raise InvalidParameter("identifier", "must be `system|value` with both parts non-empty")
    found = patients.find_by_identifier(session, access, *pair).items
    bundle = fhir.bundle_searchset(
        [_patient(p) for p in found], len(found), self_url, None, base_url
    )
    return bundle, tuple(p.id for p in found)


# ----------------------------------------------------------------------------- Observation


def read_observation(
    session: Session, access: Access, raw_id: str
) -> tuple[dict[str, Any], uuid.UUID, uuid.UUID]:
    """The Observation, its patient's id and its own (for the audit)."""
    out = assessments.get_assessment(session, access, _id(raw_id, "assessment"))
    return _observation(out), out.patient_id, out.id


def _versions(
    session: Session, access: Access, raw_id: str
) -> tuple[list[dict[str, Any]], uuid.UUID, uuid.UUID]:
    """Every version's Observation, newest first."""
    row = assessments.require_assessment(session, access, _id(raw_id, "assessment"))
    page = versioning.history_page(session, row, MAX_HISTORY, None)
    served = []
    for item in page.items:
        entered_in_error = item["status"] == "entered-in-error"
        record = fhir.AssessmentRecord(
            id=str(row.id),
            patient_id=str(row.patient_id),
            version=item["version"],
            amended=item["version"] > 1 and not entered_in_error,
            entered_in_error=entered_in_error,
            recorded_at=_aware(row.recorded_at),
            content=item,
            scores=item["scores"],
            updated_at=_aware(item["recorded_at"]),
        )
        served.append(fhir.assessment_observation(record))
    served.reverse()
    return served, row.patient_id, row.id


def observation_history(
    session: Session, access: Access, raw_id: str, self_url: str, base_url: str
) -> tuple[dict[str, Any], uuid.UUID, uuid.UUID]:
    versions, patient_id, assessment_id = _versions(session, access, raw_id)
    return fhir.bundle_history(versions, self_url, base_url), patient_id, assessment_id


def observation_version(
    session: Session, access: Access, raw_id: str, raw_version: str
) -> tuple[dict[str, Any], uuid.UUID, uuid.UUID]:
    versions, patient_id, assessment_id = _versions(session, access, raw_id)
    for resource in versions:
        if resource["meta"]["versionId"] == raw_version:
            return resource, patient_id, assessment_id
    raise NotFound(f"assessment {assessment_id} has no version {raw_version}")


@dataclass(frozen=True, slots=True)
class ObservationSearch:
    patient: str | None = None
    subject: str | None = None
    code: str | None = None
    dates: tuple[str, ...] = ()
    count: int | None = None
    offset: int = 0


_PREFIXES = ("ge", "le", "gt", "lt", "eq")


def _date_filter(raw: str) -> tuple[str, date]:
    prefix, value = ("eq", raw)
    if raw[:2] in _PREFIXES:
        prefix, value = raw[:2], raw[2:]
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidParameter(
            "date", "must be a date YYYY-MM-DD, optionally prefixed ge, le, gt, lt or eq"
        ) from None
    if len(value) != 10:
        raise InvalidParameter("date", "must be a date YYYY-MM-DD")
    return prefix, day


def _code_matches(code: str) -> bool:
    """`pasi`, `|pasi` is not ours (no system), `<our system>|pasi`: the only code served."""
    system, sep, value = code.rpartition("|")
    if not sep:
        return value == fhir.PASI_CODE
    return system == fhir.CODE_SYSTEM_URL and value == fhir.PASI_CODE


def _subject_patient(search: ObservationSearch) -> str | None:
    patient = search.patient
    if search.subject is not None:
        reference = search.subject.removeprefix("Patient/")
        if patient is not None and patient.removeprefix("Patient/") != reference:
            return ""  # two different patients: nothing matches
        patient = reference
    return None if patient is None else patient.removeprefix("Patient/")


def search_observations(
    session: Session,
    access: Access,
    search: ObservationSearch,
    self_url: str,
    page_url: Callable[[int], str],
    base_url: str,
) -> tuple[dict[str, Any], tuple[uuid.UUID, ...]]:
    """Active assessments of the caller's patients, by date; another organization's patient
    matches nothing, exactly like an unknown one."""
    count = DEFAULT_COUNT if search.count is None else min(search.count, MAX_COUNT)
    query = (
        select(Assessment)
        .join(Patient, Patient.id == Assessment.patient_id)
        .where(visible(access), Assessment.entered_in_error.is_(False))
    )
    patient = _subject_patient(search)
    nothing = False
    if patient is not None:
        try:
            query = query.where(Assessment.patient_id == uuid.UUID(patient))
        except ValueError:
            nothing = True
    if search.code is not None and not any(_code_matches(c) for c in search.code.split(",")):
        nothing = True
    for raw in search.dates:
        prefix, day = _date_filter(raw)
        column = Assessment.assessed_on
        condition = {
            "ge": column >= day,
            "le": column <= day,
            "gt": column > day,
            "lt": column < day,
            "eq": column == day,
        }[prefix]
        query = query.where(condition)
    if nothing:
        return fhir.bundle_searchset([], 0, self_url, None, base_url), ()
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ordered = query.order_by(Assessment.assessed_on, Assessment.recorded_at, Assessment.id)
    rows = list(session.scalars(ordered.offset(search.offset).limit(count))) if count else []
    outs = [assessments.to_out(r) for r in rows]
    following = search.offset + count
    # `_count=0` asks for the total only (FHIR search): no entries, no next page.
    next_url = page_url(following) if count and following < total else None
    bundle = fhir.bundle_searchset(
        [_observation(o) for o in outs], total, self_url, next_url, base_url
    )
    return bundle, tuple(dict.fromkeys(o.patient_id for o in outs))


class ObservationCreate(BaseModel):
    """A posted Observation read as the v1 create: whose, and the assessment body."""

    patient_id: uuid.UUID
    assessment: AssessmentIn


def read_posted_observation(resource: object) -> ObservationCreate:
    """The v1 create a posted Observation asks for; 422 names the failing element's FHIRPath."""
    try:
        parsed = fhir.parse_observation(resource)
    except fhir.FhirInputError as exc:
        error = InvalidInput("", exc.diagnostics)
        error.errors = [{"pointer": "", "detail": exc.diagnostics, "expression": exc.expression}]
        raise error from None
    try:
        patient_id = uuid.UUID(parsed.patient_id)
    except ValueError:
        error = InvalidInput("", "must reference a patient of this service: Patient/{id}")
        error.errors = [
            {
                "pointer": "",
                "detail": "must reference a patient of this service: Patient/{id}",
                "expression": "Observation.subject.reference",
            }
        ]
        raise error from None
    try:
        body = AssessmentIn.model_validate(parsed.body)
    except ValidationError as exc:
        items = []
        for e in exc.errors():
            pointer = "".join(f"/{part}" for part in e["loc"])
            items.append(
                {"pointer": pointer, "detail": e["msg"], "expression": parsed.expression(pointer)}
            )
        error = InvalidInput(items[0]["pointer"], items[0]["detail"])
        error.errors = items
        raise error from None
    return ObservationCreate(patient_id=patient_id, assessment=body)


def create_observation(
    session: Session, access: Access, request: ObservationCreate
) -> tuple[dict[str, Any], uuid.UUID, uuid.UUID]:
    """Recorded by the v1 create itself: same checks, same scores, same unit of work."""
    out = assessments.create_assessment(session, access, request.patient_id, request.assessment)
    return _observation(out), out.patient_id, out.id


EXAMPLE_PATIENT_ID = "00000000-0000-4000-8000-000000000001"


def example_observation() -> dict[str, Any]:
    """The v1 baseline example as the Observation to post (id and meta are the server's)."""
    value = examples.ASSESSMENT["baseline"]["value"]
    body = AssessmentIn.model_validate(value)
    moment = datetime(2011, 10, 20, 12, 0, tzinfo=UTC)
    record = fhir.AssessmentRecord(
        id="example",
        patient_id=EXAMPLE_PATIENT_ID,
        version=1,
        amended=False,
        entered_in_error=False,
        recorded_at=moment,
        content=body.model_dump(mode="json", include=CONTENT_FIELDS),
        scores=compute_scores(body).scores.model_dump(mode="json"),
    )
    observation = fhir.assessment_observation(record)
    del observation["id"], observation["meta"], observation["issued"]
    return observation


def code_system(raw_id: str) -> dict[str, Any]:
    if raw_id != fhir.CODE_SYSTEM_ID:
        raise NotFound(f"no CodeSystem {raw_id}; this service has {fhir.CODE_SYSTEM_ID}")
    return fhir.code_system()


def capability_statement(base_url: str) -> dict[str, Any]:
    return fhir.capability_statement(base_url)
