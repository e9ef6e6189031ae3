"""Stateless scoring: nothing is stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from app.api.auth import ScoresAccess
from app.api.lean_route import LeanRoute
from app.schemas import examples
from app.schemas.common import problem_responses
from app.schemas.scores import (
    BsaScoreRequest,
    BsaScoreResponse,
    DlqiScoreRequest,
    DlqiScoreResponse,
    PasiScoreRequest,
    Scores,
)
from app.services.scoring import compute_bsa, compute_dlqi, compute_scores

router = APIRouter(route_class=LeanRoute, prefix="/v1/scores", tags=["scores"])
ERRORS = problem_responses(400, 401, 403, 413, 415, 422, 429)


@router.post(
    "/pasi",
    summary="Score PASI (and BSA, PGA×BSA, DLQI when given) without storing",
    response_model=Scores,
    status_code=200,
    responses=ERRORS,
)
async def score_pasi(
    body: Annotated[PasiScoreRequest, Body(openapi_examples=examples.PASI_SCORE)],
    _access: ScoresAccess,
) -> Scores:
    """PASI = Σ weight × (erythema + induration + desquamation) × area score
    (Fredriksson & Pettersson 1978), computed exactly in tenths, with each region's part.
    BSA is given when all four regions have `area_percent` or `bsa_percent` is measured."""
    return compute_scores(body).scores


@router.post(
    "/bsa",
    summary="Score BSA (and PGA×BSA) without storing",
    response_model=BsaScoreResponse,
    status_code=200,
    responses=ERRORS,
)
async def score_bsa(
    body: Annotated[BsaScoreRequest, Body(openapi_examples=examples.BSA_SCORE)],
    _access: ScoresAccess,
) -> BsaScoreResponse:
    """BSA = 0.1·head + 0.2·upper limbs + 0.3·trunk + 0.4·lower limbs (regional percents), or a
    measured BSA (takes precedence). Severity on the exact value (US NPF convention)."""
    return compute_bsa(body)


@router.post(
    "/dlqi",
    summary="Score the DLQI without storing",
    response_model=DlqiScoreResponse,
    status_code=200,
    responses=ERRORS,
)
async def score_dlqi(
    body: Annotated[DlqiScoreRequest, Body(openapi_examples=examples.DLQI_SCORE)],
    _access: ScoresAccess,
) -> DlqiScoreResponse:
    """Total 0–30 with its band (Hongbo et al. 2005); one unanswered item scores 0, two or
    more give no total (Cardiff rule)."""
    return compute_dlqi(body.dlqi)
