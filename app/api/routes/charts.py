"""A patient's course as a chart (SPEC section 8): PASI over time, SVG or PNG.

Sync handlers on purpose: a render takes 0.2–0.8 s under matplotlib's lock, so it runs in the
worker threadpool, never on the event loop."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api.context import ReadContext, RequestContext, audited
from app.api.lean_route import LeanRoute
from app.api.outcome_options import OutcomeQueryDep
from app.api.rendered import PNG_MEDIA_TYPE, SVG_MEDIA_TYPE, PngResponse, SvgResponse, read_then
from app.formats.charts import (
    DEFAULT_PNG_HEIGHT,
    DEFAULT_PNG_WIDTH,
    PNG_MAX_PX,
    PNG_MIN_PX,
    CourseChart,
    patient_course_png,
    patient_course_svg,
)
from app.schemas.common import problem_responses
from app.scoring.outcomes import OutcomeOptions
from app.services.charts import patient_chart

router = APIRouter(route_class=LeanRoute, tags=["charts"])

_DESCRIPTION = (
    "PASI over time: each assessment a point labelled with its visit, the baseline marked, "
    "guides at this patient's PASI 75 and PASI 90 levels, treatment courses shaded with dose "
    "marks, clearance and relapse marked; BSA as a second panel when recorded. A patient with "
    "one or no assessment gets a chart that says so."
)


def _image_responses(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": f"The patient's course as {what}",
            "content": {media_type: {}},
        },
        **problem_responses(401, 403, 404, 422, 429),
    }


def _chart(ctx: RequestContext, patient_id: uuid.UUID, options: OutcomeOptions) -> CourseChart:
    return read_then(
        ctx,
        lambda s: patient_chart(s, ctx.access, patient_id, options, ctx.db.bulk_read),
        lambda _chart: ctx.touched(patient_id, "patient", patient_id),
    )


@router.get(
    "/v1/patients/{patient_id}/chart.svg",
    summary="The patient's PASI course as an SVG chart",
    description=_DESCRIPTION,
    response_class=SvgResponse,
    responses=_image_responses(SVG_MEDIA_TYPE, "SVG (labels are text)"),
)
@audited("read-patient-chart")
def get_patient_chart_svg(
    patient_id: uuid.UUID, ctx: ReadContext, outcome: OutcomeQueryDep
) -> Response:
    options = outcome.options()
    return SvgResponse(patient_course_svg(_chart(ctx, patient_id, options)))


@router.get(
    "/v1/patients/{patient_id}/chart.png",
    summary="The patient's PASI course as a PNG chart",
    description=_DESCRIPTION,
    response_class=PngResponse,
    responses=_image_responses(PNG_MEDIA_TYPE, "PNG"),
)
@audited("read-patient-chart")
def get_patient_chart_png(
    patient_id: uuid.UUID,
    ctx: ReadContext,
    outcome: OutcomeQueryDep,
    width: Annotated[
        int,
        Query(
            ge=PNG_MIN_PX[0],
            le=PNG_MAX_PX,
            description=f"Width in pixels ({PNG_MIN_PX[0]}–{PNG_MAX_PX}, "
            f"default {DEFAULT_PNG_WIDTH})",
        ),
    ] = DEFAULT_PNG_WIDTH,
    height: Annotated[
        int,
        Query(
            ge=PNG_MIN_PX[1],
            le=PNG_MAX_PX,
            description=f"Height in pixels ({PNG_MIN_PX[1]}–{PNG_MAX_PX}, "
            f"default {DEFAULT_PNG_HEIGHT})",
        ),
    ] = DEFAULT_PNG_HEIGHT,
) -> Response:
    options = outcome.options()
    chart = _chart(ctx, patient_id, options)
    return PngResponse(patient_course_png(chart, width, height))
