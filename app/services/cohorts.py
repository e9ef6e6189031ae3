"""Cohort statistics (SPEC section 8): which patients a cohort holds, one read of their stored
scores and courses, then the per-patient outcomes core and the cohort core.

Selection
    The patients the caller may reach (`patients.visible`: the key's organizations), narrowed
    by each filter given, all of them applying:

    * `identifier_system`: patients with an identifier in that system (a study's subject ids);
    * `patient_ids`: those patients (ids the caller cannot reach are left out, as in a search);
    * `treatment_agent`: patients with an active treatment course of that agent, compared
      without regard to case or surrounding spaces ("UC-MSC infusion" = "uc-msc infusion ").
      Each patient's outcomes are then anchored on the earliest such course (by start date,
      then as recorded), as `GET /v1/patients/{id}/outcomes?treatment=...` would be: the
      baseline is the latest assessment on or before its start and days count from its start.
      A patient with no assessment on or before that start has no baseline for it: the
      patient stays in the cohort (and in the audit event) but, like a patient with no
      assessment, enters no time-to-event estimate and is a non-responder under `nri`.

Every patient selected is "included": the audit event of the request names each of them,
whether or not they have assessments or enter the estimate.

Reading and computing
    `load_cohort` is the database read of the response rates (three queries: the selection,
    then every included patient's dated scores with `load_scores_of_many` and active courses
    with `load_courses_of_many`, each scoped by `visible`), whose per-patient outcomes are
    `compute_outcomes`'. A time-to-event estimate needs one figure per patient, so
    `load_cohort_events` reads only the columns that figure depends on, as the driver gives
    them (dates decoded once per distinct date, patient ids once per patient, no
    `recorded_at`: only a patient with two assessments on one date, whose order it decides,
    or with an invalid score is read again in full), and `kaplan_meier_of` computes it
    with `event_observation`, equal to the full outcomes' `event_time` (a property test holds
    them equal). Everything after the read is pure and runs outside the transaction (see
    `app.api.rendered`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import Dialect, String, cast, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.sqltypes import NullType

from app.auth.access import Access
from app.db.models import Assessment, Patient, PatientIdentifier, table_of
from app.errors import InvalidParameter
from app.formats.charts import KmChart, KmStep
from app.schemas.cohorts import (
    WILSON_METHOD,
    KaplanMeierStepOut,
    ResponseRatesOut,
    TargetRateOut,
    TimeToEventOut,
    VisitRatesOut,
)
from app.scoring.cohort import (
    CohortEvent,
    Imputation,
    KaplanMeier,
    Observation,
    event_time,
    kaplan_meier,
    response_rates,
)
from app.scoring.errors import ScoringInputError
from app.scoring.event_times import EventScore, event_observation, is_valid_score
from app.scoring.outcomes import (
    DatedScore,
    OutcomeOptions,
    Outcomes,
    TreatmentCourse,
    compute_outcomes,
)
from app.scoring.response import ABSOLUTE_TARGETS, RELATIVE_TARGETS
from app.services.outcomes import CourseRecord, load_courses_of_many, load_scores_of_many
from app.services.patients import visible

TARGETS = tuple(key for key, _ in RELATIVE_TARGETS + ABSOLUTE_TARGETS)
"""Every target a response rate can be asked for, in the outcomes' order."""


@dataclass(frozen=True, slots=True)
class CohortSelection:
    """The filters of a cohort query; None (or no ids) means not narrowed by that filter."""

    identifier_system: str | None = None
    patient_ids: tuple[uuid.UUID, ...] | None = None
    treatment_agent: str | None = None


@dataclass(frozen=True, slots=True)
class CohortData:
    """One read of a cohort: every included patient (in creation order) and their stored
    scores and active courses; `anchors` holds each patient's course of `treatment_agent`."""

    patient_ids: tuple[uuid.UUID, ...]
    scores: dict[uuid.UUID, list[DatedScore]]
    courses: dict[uuid.UUID, list[CourseRecord]]
    anchors: dict[uuid.UUID, TreatmentCourse]


def parse_targets(text: str) -> tuple[str, ...]:
    """`pasi75,pasi90` -> ("pasi75", "pasi90"): known targets only, each once, in order."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise InvalidParameter("targets", f"must name at least one of {', '.join(TARGETS)}")
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise InvalidParameter(
            "targets", f"has an unknown target {unknown[0]!r}; use {', '.join(TARGETS)}"
        )
    return tuple(dict.fromkeys(names))


def _agent_key(agent: str) -> str:
    return agent.strip().casefold()


def _selected_patients(
    session: Session, access: Access, selection: CohortSelection
) -> list[uuid.UUID]:
    query = select(Patient.id).where(visible(access)).order_by(Patient.created_at, Patient.id)
    if selection.identifier_system is not None:
        in_system = select(PatientIdentifier.patient_id).where(
            PatientIdentifier.system == selection.identifier_system
        )
        query = query.where(Patient.id.in_(in_system))
    if selection.patient_ids is not None:
        query = query.where(Patient.id.in_(sorted(set(selection.patient_ids))))
    return list(session.scalars(query))


@dataclass(frozen=True, slots=True)
class CohortEvents:
    """One read of a cohort for a time-to-event estimate: every included patient (in creation
    order), their scores as `EventScore`s in outcomes order, and their active courses and
    anchors as in `CohortData`. `full` holds the dated scores of any patient with a score
    the outcomes refuse, so that the answer is their error, word for word."""

    patient_ids: tuple[uuid.UUID, ...]
    scores: dict[uuid.UUID, list[EventScore]]
    full: dict[uuid.UUID, list[DatedScore]]
    courses: dict[uuid.UUID, list[CourseRecord]]
    anchors: dict[uuid.UUID, TreatmentCourse]


@dataclass(frozen=True, slots=True)
class _Included:
    """Who a cohort includes, the ids to read scores for (None: every reachable patient),
    their active courses and anchors."""

    patient_ids: list[uuid.UUID]
    wanted: list[uuid.UUID] | None
    courses: dict[uuid.UUID, list[CourseRecord]]
    anchors: dict[uuid.UUID, TreatmentCourse]


def _included(session: Session, access: Access, selection: CohortSelection) -> _Included | None:
    """The selection and courses (None: an empty cohort)."""
    patient_ids = _selected_patients(session, access, selection)
    narrowed = selection.identifier_system is not None or selection.patient_ids is not None
    if narrowed and not patient_ids:
        return None
    # Not narrowed: every patient the caller may reach (no list of ids to send).
    wanted: list[uuid.UUID] | None = patient_ids if narrowed else None
    courses = load_courses_of_many(session, access, wanted)
    anchors: dict[uuid.UUID, TreatmentCourse] = {}
    if selection.treatment_agent is not None:
        agent = _agent_key(selection.treatment_agent)
        for patient_id in patient_ids:
            first = next(
                (c for c in courses.get(patient_id, ()) if _agent_key(c.agent) == agent), None
            )
            if first is not None:
                anchors[patient_id] = first.course
        patient_ids = [p for p in patient_ids if p in anchors]
        if not patient_ids:
            return None
        wanted = patient_ids
    return _Included(patient_ids, wanted, courses, anchors)


def load_cohort(session: Session, access: Access, selection: CohortSelection) -> CohortData:
    """The cohort's patients, scores and courses, read in the caller's transaction."""
    included = _included(session, access, selection)
    if included is None:
        return CohortData((), {}, {}, {})
    scores = load_scores_of_many(session, access, included.wanted)
    return CohortData(tuple(included.patient_ids), scores, included.courses, included.anchors)


def _processor(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """What the ORM does to this column's raw driver value (identity if nothing)."""
    process = column.type.dialect_impl(dialect).result_processor(dialect, None)
    return process if process is not None else (lambda value: value)


_EVENT_ROW_DAY = itemgetter(0)
_OUTCOMES_ORDER = attrgetter("assessed_on", "recorded_at")  # compute_outcomes' sort key


def _event_scores(dated: list[DatedScore]) -> list[EventScore]:
    ordered = sorted(dated, key=_OUTCOMES_ORDER)
    return [(s.assessed_on.toordinal(), s.pasi_tenths, s.iga, s.is_baseline) for s in ordered]


def _event_scores_of_many(
    session: Session, access: Access, patient_ids: list[uuid.UUID] | None
) -> tuple[dict[uuid.UUID, list[EventScore]], dict[uuid.UUID, list[DatedScore]]]:
    """Each patient's `EventScore`s in outcomes order, scoped like `load_scores_of_many`;
    and the dated scores of the patients with a score `is_valid_score` refuses.

    The per-row work is the cost of a cohort (200,000 rows), so one query reads only what
    the event needs, as the driver gives it: patient ids as text (one UUID per patient),
    dates decoded once per distinct value with the column's own processor, no
    `recorded_at`. Only a patient with two assessments on one date (whose order it decides)
    or an invalid score is read again in full, in a second query, and ordered as
    `compute_outcomes` orders."""
    query = (
        select(
            cast(Assessment.patient_id, String),
            type_coerce(Assessment.assessed_on, NullType()),
            Assessment.pasi_tenths,
            Assessment.iga,
            type_coerce(Assessment.is_baseline, NullType()),
        )
        .join(Patient, Patient.id == Assessment.patient_id)
        .where(Assessment.entered_in_error.is_(False), visible(access))
    )
    if patient_ids is not None:
        query = query.where(Assessment.patient_id.in_(patient_ids))
    connection = session.connection()
    to_date = _processor(table_of(Assessment).c.assessed_on, connection.dialect)

    days: dict[Any, int] = {}
    grouped: dict[str, list[EventScore]] = {}
    again: set[str] = set()  # read again in full: same-date assessments or an invalid score
    for raw_patient, raw_on, pasi, iga, baseline in connection.execute(query):
        day = days.get(raw_on)
        if day is None:
            day = days[raw_on] = to_date(raw_on).toordinal()
        rows = grouped.get(raw_patient)
        if rows is None:
            rows = grouped[raw_patient] = []
        rows.append((day, pasi, iga, bool(baseline)))
        if not is_valid_score(pasi, iga):
            again.add(raw_patient)

    scores: dict[uuid.UUID, list[EventScore]] = {}
    for raw_patient, rows in grouped.items():
        rows.sort(key=_EVENT_ROW_DAY)  # stable, like compute_outcomes' sort
        if len({row[0] for row in rows}) < len(rows):
            again.add(raw_patient)
        scores[uuid.UUID(raw_patient)] = rows
    full: dict[uuid.UUID, list[DatedScore]] = {}
    if again:
        dated = load_scores_of_many(session, access, [uuid.UUID(p) for p in again])
        for patient_id, patient_scores in dated.items():
            scores[patient_id] = _event_scores(patient_scores)
            if not all(is_valid_score(s.pasi_tenths, s.iga) for s in patient_scores):
                full[patient_id] = patient_scores
    return scores, full


def load_cohort_events(
    session: Session, access: Access, selection: CohortSelection
) -> CohortEvents:
    """`load_cohort` for a time-to-event estimate: the same patients, lean scores."""
    included = _included(session, access, selection)
    if included is None:
        return CohortEvents((), {}, {}, {}, {})
    scores, full = _event_scores_of_many(session, access, included.wanted)
    return CohortEvents(
        tuple(included.patient_ids), scores, full, included.courses, included.anchors
    )


# --------------------------------------------------------------------------- pure from here


def cohort_outcomes(data: CohortData, options: OutcomeOptions) -> list[Outcomes | None]:
    """Each included patient's outcomes (None: no assessment, or no baseline for the anchor
    course), computed by the same core as `GET /v1/patients/{id}/outcomes`."""
    result: list[Outcomes | None] = []
    for patient_id in data.patient_ids:
        anchor = data.anchors.get(patient_id)
        treatments = [record.course for record in data.courses.get(patient_id, ())]
        patient_options = options if anchor is None else replace(options, treatment=anchor)
        try:
            outcomes = compute_outcomes(
                data.scores.get(patient_id, ()), patient_options, treatments
            )
        except ScoringInputError as exc:
            if anchor is None or exc.field != "treatment":
                raise InvalidParameter(exc.field, exc.rule) from exc
            outcomes = None  # no assessment on or before the course's start
        result.append(outcomes)
    return result


def cohort_observations(
    data: CohortEvents, event: CohortEvent, options: OutcomeOptions
) -> list[Observation]:
    """Each included patient's `event_observation`, in order, leaving out those that do not
    enter: what `event_time` of `cohort_outcomes` gives, errors included, without the full
    outcomes."""
    observations = []
    for patient_id in data.patient_ids:
        anchor = data.anchors.get(patient_id)
        treatments = [record.course for record in data.courses.get(patient_id, ())]
        patient_options = options if anchor is None else replace(options, treatment=anchor)
        full = data.full.get(patient_id)
        try:
            if full is None:
                observation = event_observation(
                    data.scores.get(patient_id, ()), event, patient_options, treatments
                )
            else:  # a score the outcomes refuse: their error, naming the assessment
                outcomes = compute_outcomes(full, patient_options, treatments)
                observation = None if outcomes is None else event_time(outcomes, event)
        except ScoringInputError as exc:
            if anchor is None or exc.field != "treatment":
                raise InvalidParameter(exc.field, exc.rule) from exc
            observation = None  # no assessment on or before the course's start
        if observation is not None:
            observations.append(observation)
    return observations


def kaplan_meier_of(data: CohortEvents, event: CohortEvent, options: OutcomeOptions) -> KaplanMeier:
    return kaplan_meier(cohort_observations(data, event, options))


def time_to_event_out(event: CohortEvent, km: KaplanMeier) -> TimeToEventOut:
    return TimeToEventOut(
        event=event,
        n=km.n,
        events=km.events,
        censored=km.censored,
        median_days=km.median_days,
        median_ci=km.median_ci,
        steps=[
            KaplanMeierStepOut.model_construct(
                day=s.day,
                at_risk=s.at_risk,
                events=s.events,
                censored=s.censored,
                survival=s.survival,
                ci_lower=s.ci_lower,
                ci_upper=s.ci_upper,
            )
            for s in km.steps
        ],
        method=km.method,
    )


def km_chart(event: CohortEvent, km: KaplanMeier) -> KmChart:
    return KmChart(
        event=event.value,
        steps=[
            KmStep(s.day, s.at_risk, s.events, s.censored, s.survival, s.ci_lower, s.ci_upper)
            for s in km.steps
        ],
        n=km.n,
        median_days=km.median_days,
    )


def response_rates_out(
    data: CohortData, targets: Sequence[str], imputation: Imputation
) -> ResponseRatesOut:
    """Response rates per visit. Relative targets are judged against each patient's baseline
    (or the anchor course's baseline), so the outcome options do not change them."""
    rates = response_rates(cohort_outcomes(data, OutcomeOptions()), targets, imputation)
    return ResponseRatesOut(
        imputation=imputation,
        targets=list(targets),
        patients=len(data.patient_ids),
        visits=[
            VisitRatesOut(
                visit=visit.visit,
                median_day=visit.median_day,
                n=visit.n,
                assessed=visit.assessed,
                rates={
                    rate.target: TargetRateOut(
                        responders=rate.responders,
                        proportion=rate.proportion,
                        ci_lower=rate.ci_lower,
                        ci_upper=rate.ci_upper,
                    )
                    for rate in visit.rates
                },
            )
            for visit in rates
        ],
        method=WILSON_METHOD,
    )
