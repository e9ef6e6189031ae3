"""Cohort statistics across the patients of the key's organizations (SPEC section 8)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.api.context import ReadContext, RequestContext, audited
from app.api.lean_route import LeanRoute
from app.api.outcome_options import OutcomeQueryDep
from app.api.rendered import SVG_MEDIA_TYPE, SvgResponse, json_answer, read_then
from app.formats.charts import km_curve_svg
from app.schemas.cohorts import ResponseRatesOut, TimeToEventOut
from app.schemas.common import problem_responses
from app.scoring.cohort import CohortEvent, Imputation
from app.services import cohorts as service
from app.services.cohorts import CohortData, CohortEvents, CohortSelection

router = APIRouter(route_class=LeanRoute, prefix="/v1/cohorts", tags=["cohorts"])

MAX_PATIENT_IDS = 100  # about 4.8 kB of query: within common proxy and server limits


def cohort_selection(
    identifier_system: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="Only patients with an identifier in this system (a study's subject "
            "ids, e.g. https://trial.example/subject)",
        ),
    ] = None,
    patient_id: Annotated[
        list[uuid.UUID] | None,
        Query(
            max_length=MAX_PATIENT_IDS,
            description="Only these patients (repeat the parameter; at most 100: select a "
            "whole study by `identifier_system`). Ids of patients the key cannot reach are left "
            "out, as in a search",
        ),
    ] = None,
    treatment_agent: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only patients with an active treatment course of this agent (case and "
            "surrounding spaces ignored); days then count from the start of each patient's "
            "earliest such course, its baseline the latest assessment on or before that start",
        ),
    ] = None,
) -> CohortSelection:
    return CohortSelection(
        identifier_system=identifier_system,
        patient_ids=None if patient_id is None else tuple(patient_id),
        treatment_agent=treatment_agent,
    )


Selection = Annotated[CohortSelection, Depends(cohort_selection)]
Event = Annotated[
    CohortEvent,
    Query(
        description="clearance (by the `clearance` criterion, default), relapse (by the "
        "`relapse` definition; only patients with a qualifying response enter), pasi50, "
        "pasi75 or pasi90 (first reached)"
    ),
]


def _read(ctx: RequestContext, selection: CohortSelection) -> CohortData:
    """The cohort, read with its audit event naming every patient it includes."""
    return read_then(
        ctx,
        lambda s: service.load_cohort(s, ctx.access, selection),
        lambda data: ctx.touched(patient_ids=data.patient_ids),
    )


def _read_events(ctx: RequestContext, selection: CohortSelection) -> CohortEvents:
    """`_read` for a time-to-event estimate: the same patients and audit, lean scores."""
    return read_then(
        ctx,
        lambda s: service.load_cohort_events(s, ctx.access, selection),
        lambda data: ctx.touched(patient_ids=data.patient_ids),
    )


@router.get(
    "/responses",
    summary="Response rates per visit (PASI 75, PASI 90 ...) with 95 % Wilson intervals",
    response_model=ResponseRatesOut,
    responses=problem_responses(401, 403, 422, 429),
)
@audited("read-cohort-responses")
def get_response_rates(
    ctx: ReadContext,
    selection: Selection,
    targets: Annotated[
        str,
        Query(
            min_length=1,
            max_length=200,
            description="Comma-separated: pasi50, pasi75, pasi90, pasi100 (relative to each "
            "patient's baseline) and pasi_le_1, pasi_le_2, pasi_le_3, pasi_le_5 (absolute)",
        ),
    ] = "pasi75,pasi90",
    imputation: Annotated[
        Imputation,
        Query(
            description="nri (default: non-responder imputation, every cohort patient counts, "
            "not assessed = non-responder), observed (only the patients assessed at the "
            "visit) or locf (last observation carried forward)"
        ),
    ] = Imputation.NRI,
) -> Response:
    """For each visit label (ordered by its median day from the anchor): `n`, and per target
    the responders, the proportion and its 95 % Wilson interval. The imputation is named in
    the answer: rates move a lot with it."""
    wanted = service.parse_targets(targets)
    data = _read(ctx, selection)
    return json_answer(service.response_rates_out(data, wanted, imputation).model_dump_json())


@router.get(
    "/time-to-event",
    summary="Kaplan–Meier estimate of time to clearance, relapse or a PASI response",
    response_model=TimeToEventOut,
    responses=problem_responses(401, 403, 422, 429),
)
@audited("read-cohort-time-to-event")
def get_time_to_event(
    ctx: ReadContext,
    selection: Selection,
    outcome: OutcomeQueryDep,
    event: Event = CohortEvent.CLEARANCE,
) -> Response:
    """Each patient contributes the per-patient figure of the outcomes: days to the event, or
    censored at the follow-up so far. `survival` is the probability of not yet having had the
    event. A cohort with no patients answers `n` 0."""
    options = outcome.options()
    data = _read_events(ctx, selection)
    km = service.kaplan_meier_of(data, event, options)
    return json_answer(service.time_to_event_out(event, km).model_dump_json())


@router.get(
    "/time-to-event.svg",
    summary="Kaplan–Meier curve (SVG) with its 95 % band and the numbers at risk",
    response_class=SvgResponse,
    responses={
        200: {
            "description": "The Kaplan–Meier curve as SVG",
            "content": {SVG_MEDIA_TYPE: {}},
        },
        **problem_responses(401, 403, 422, 429),
    },
)
@audited("read-cohort-chart")
def get_time_to_event_svg(
    ctx: ReadContext,
    selection: Selection,
    outcome: OutcomeQueryDep,
    event: Event = CohortEvent.CLEARANCE,
) -> Response:
    """The same estimate as `GET /v1/cohorts/time-to-event` with the same parameters, drawn."""
    options = outcome.options()
    data = _read_events(ctx, selection)
    km = service.kaplan_meier_of(data, event, options)
    return SvgResponse(km_curve_svg(service.km_chart(event, km)))
