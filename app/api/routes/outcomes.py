"""Outcomes over time for one patient."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic_core import to_json

from app.api.context import ReadContext, audited, json_response
from app.api.lean_route import LeanRoute
from app.api.outcome_options import threshold_tenths
from app.api.state import runtime
from app.formats.outcomes import outcomes_json
from app.schemas.common import problem_responses
from app.schemas.outcomes import OutcomesOut
from app.scoring.outcomes import OutcomeOptions
from app.scoring.relapse import REBOUND_WINDOW_DAYS_NPF, RelapseDefinition
from app.scoring.response import ClearanceCriterion
from app.services.outcomes import OutcomesRead, cached_outcomes, read_outcomes

router = APIRouter(route_class=LeanRoute, tags=["outcomes"])


@router.get(
    "/v1/patients/{patient_id}/outcomes",
    summary="Baseline, change, responses, clearance, relapse, rebound and the series",
    response_model=OutcomesOut,
    responses=problem_responses(401, 403, 404, 422, 429),
)
@audited("read-outcomes")
async def get_outcomes(
    request: Request,
    patient_id: uuid.UUID,
    ctx: ReadContext,
    clearance: Annotated[
        ClearanceCriterion,
        Query(description="pasi100 (PASI = 0, default), pasi90, pasi_le_1, pasi_le_2, iga_0"),
    ] = ClearanceCriterion.PASI100,
    relapse: Annotated[
        RelapseDefinition,
        Query(
            description="npf_50pct_loss (default; Papp et al. 2006), ema_50pct_loss, "
            "loss_of_pasi75, pasi_above (needs relapse_threshold)"
        ),
    ] = RelapseDefinition.NPF_50PCT_LOSS,
    relapse_threshold: Annotated[
        float | None,
        Query(ge=0, le=72, description="PASI threshold N for relapse=pasi_above (0–72)"),
    ] = None,
    treatment: Annotated[
        uuid.UUID | None,
        Query(description="Anchor on this treatment: baseline = latest on/before its start"),
    ] = None,
    rebound_window_days: Annotated[
        int,
        Query(
            ge=1, le=3650, description="Rebound window after a treatment's end (90 = NPF; 60 = EMA)"
        ),
    ] = REBOUND_WINDOW_DAYS_NPF,
) -> Response:
    """Days are whole days from the anchor (the baseline's date, or the treatment's start).
    A patient with no (active) assessments is 404 with `reason: no-assessments`."""
    options = OutcomeOptions(
        clearance=clearance,
        relapse=relapse,
        relapse_threshold_tenths=threshold_tenths(relapse_threshold),
        rebound_window_days=rebound_window_days,
    )
    cache = runtime(request).outcomes_cache

    def answer(read: OutcomesRead) -> Response:
        if read.body is not None:  # cached under the patient's current revision
            return json_response(200, read.body, {})
        assert read.outcomes is not None
        # Shaped and encoded once, after the read and its audit event, straight to bytes.
        body = to_json(outcomes_json(read.outcomes))
        if read.key is not None:
            cache.put(read.key, body)
        return json_response(200, body, {})

    return await ctx.read_probed(
        (lambda s: cached_outcomes(s, ctx.access, patient_id, options, treatment, cache))
        if cache.max_bytes
        else None,  # no cache: nothing to probe for
        lambda s: read_outcomes(
            s, ctx.access, patient_id, options, treatment, cache, ctx.db.bulk_read
        ),
        lambda _read: ctx.touched(patient_id, "patient", patient_id),
        answer,
    )
