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
    `load_cohort` is the database read (three queries: the selection, then every included
    patient's dated scores with `load_scores_of_many` and active courses with
    `load_courses_of_many`, each scoped by `visible`). Everything after it is pure and runs
    outside the transaction (see `app.api.rendered`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Patient, PatientIdentifier
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
    event_time,
    kaplan_meier,
    response_rates,
)
from app.scoring.errors import ScoringInputError
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


def load_cohort(session: Session, access: Access, selection: CohortSelection) -> CohortData:
    """The cohort's patients, scores and courses, read in the caller's transaction."""
    patient_ids = _selected_patients(session, access, selection)
    narrowed = selection.identifier_system is not None or selection.patient_ids is not None
    if narrowed and not patient_ids:
        return CohortData((), {}, {}, {})
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
            return CohortData((), {}, {}, {})
        wanted = patient_ids
    scores = load_scores_of_many(session, access, wanted)
    return CohortData(tuple(patient_ids), scores, courses, anchors)


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


def kaplan_meier_of(data: CohortData, event: CohortEvent, options: OutcomeOptions) -> KaplanMeier:
    observations = []
    for outcomes in cohort_outcomes(data, options):
        observation = None if outcomes is None else event_time(outcomes, event)
        if observation is not None:
            observations.append(observation)
    return kaplan_meier(observations)


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
