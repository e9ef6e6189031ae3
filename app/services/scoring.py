"""Feed validated request models to the pure scoring core; shape its exact results for output."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.errors import InvalidInput
from app.schemas.common import as_decimal
from app.schemas.scores import (
    BsaScoreRequest,
    BsaScoreResponse,
    ClinicalScoresIn,
    DlqiIn,
    DlqiScoreResponse,
    PasiIn,
    Scores,
)
from app.scoring.bsa import bsa_from_region_percents, round_bsa, score_bsa
from app.scoring.errors import ScoringInputError
from app.scoring.instruments import (
    DlqiAnswers,
    DlqiScore,
    PgaScale,
    pga_x_bsa,
    rule_of_tens,
    score_dlqi,
)
from app.scoring.pasi import (
    REGION_WEIGHT_TENTHS,
    REGIONS,
    PasiScore,
    Region,
    RegionSigns,
    score_pasi,
)


@dataclass(frozen=True, slots=True)
class ComputedScores:
    """What the database keeps as query columns next to the `scores` JSON."""

    scores: Scores
    pasi_tenths: int
    bsa_percent: Decimal | None
    iga: int | None


# (region, its name, its weight) in declaration order: the order of `PasiScore.regions` too.
_REGION_ROWS = tuple((r, r.value, REGION_WEIGHT_TENTHS[r] / 10) for r in REGIONS)


def _region_signs(pasi: PasiIn) -> dict[Region, RegionSigns]:
    signs: dict[Region, RegionSigns] = {}
    for region, name, _weight in _REGION_ROWS:
        given = getattr(pasi, name)
        signs[region] = RegionSigns(
            erythema=given.erythema,
            induration=given.induration,
            desquamation=given.desquamation,
            area_percent=None if given.area_percent is None else as_decimal(given.area_percent),
            area_score=given.area_score,
        )
    return signs


def _dlqi_answers(dlqi: DlqiIn) -> DlqiAnswers:
    return DlqiAnswers(**dlqi.model_dump())


def _invalid(prefix: str, exc: ScoringInputError) -> InvalidInput:
    return InvalidInput(f"{prefix}/{exc.field}", exc.rule)


def _pasi(pasi: PasiIn, prefix: str = "/pasi") -> tuple[PasiScore, dict[Region, RegionSigns]]:
    signs = _region_signs(pasi)
    try:
        return score_pasi(signs), signs
    except ScoringInputError as exc:
        raise _invalid(prefix, exc) from exc


def _dlqi(dlqi: DlqiIn | None) -> DlqiScore | None:
    if dlqi is None:
        return None
    try:
        return score_dlqi(_dlqi_answers(dlqi))
    except ScoringInputError as exc:
        raise _invalid("/dlqi", exc) from exc


def _float(value: Decimal) -> float:
    return float(value)


def _tenths(tenths: int) -> float:
    """A count of tenths as the float the API reports: `tenths / 10` is the correctly rounded
    quotient, the very float `float(tenths_to_decimal(tenths))` gives, at a fraction of the cost."""
    return tenths / 10


def compute_scores(inp: ClinicalScoresIn) -> ComputedScores:
    pasi, signs = _pasi(inp.pasi)
    percents = {r: s.area_percent for r, s in signs.items() if s.area_percent is not None}
    measured = None if inp.bsa_percent is None else as_decimal(inp.bsa_percent)
    try:
        bsa = score_bsa(percents if len(percents) == len(Region) else None, measured)
    except ScoringInputError as exc:
        raise _invalid("", exc) from exc
    dlqi = _dlqi(inp.dlqi)
    reported_bsa = None if bsa is None else round_bsa(bsa.bsa_percent)
    pga = None
    if inp.iga is not None and reported_bsa is not None:
        pga = pga_x_bsa(inp.iga, reported_bsa, PgaScale.IGA_0_4)
    parts = list(pasi.regions.values())  # in REGIONS order (the core builds it so)
    # One validation of plain values (the region parts too), in pydantic-core: building the
    # five models one by one cost a Python-level __init__ each.
    scores = Scores.model_validate(
        {
            "pasi": _tenths(pasi.total_tenths),
            "pasi_regions": {
                name: _tenths(part.contribution_tenths)
                for (_r, name, _w), part in zip(_REGION_ROWS, parts, strict=True)
            },
            "pasi_region_details": {
                name: {
                    "weight": weight,
                    "severity_sum": part.severity_sum,
                    "area_score": part.area_score,
                    "contribution": _tenths(part.contribution_tenths),
                }
                for (_r, name, weight), part in zip(_REGION_ROWS, parts, strict=True)
            },
            "bsa_percent": None if reported_bsa is None else _float(reported_bsa),
            "bsa_source": None if bsa is None else bsa.source,
            "bsa_severity": None if bsa is None else bsa.severity.value,
            "iga": inp.iga,
            "pga_x_bsa": None if pga is None else _float(pga),
            "pga_scale": None if pga is None else "iga_0_4",
            "dlqi": None if dlqi is None else dlqi.total,
            "dlqi_band": None if dlqi is None or dlqi.band is None else dlqi.band.value,
            "severe_by_rule_of_tens": rule_of_tens(
                None if bsa is None else bsa.bsa_percent,
                pasi.total_tenths,
                None if dlqi is None else dlqi.total,
            ),
        }
    )
    return ComputedScores(
        scores=scores,
        pasi_tenths=pasi.total_tenths,
        bsa_percent=None if bsa is None else bsa.bsa_percent,
        iga=inp.iga,
    )


def compute_bsa(req: BsaScoreRequest) -> BsaScoreResponse:
    percents = (
        {Region(k): as_decimal(v) for k, v in req.area_percent.items()}
        if req.area_percent
        else None
    )
    measured = None if req.bsa_percent is None else as_decimal(req.bsa_percent)
    try:
        bsa = score_bsa(percents, measured)
    except ScoringInputError as exc:
        raise _invalid("", exc) from exc
    if bsa is None:  # guarded by the request model; kept for the type checker
        raise InvalidInput("", "give area_percent for all four regions, or bsa_percent")
    contributions = None
    if bsa.source == "regions" and percents is not None:
        contributions = {
            r.value: _float(bsa_from_region_percents({**{x: Decimal(0) for x in Region}, r: p}))
            for r, p in percents.items()
        }
    rounded = round_bsa(bsa.bsa_percent)
    pga = None if req.iga is None else pga_x_bsa(req.iga, rounded, PgaScale.IGA_0_4)
    return BsaScoreResponse(
        bsa_percent=_float(rounded),
        source=bsa.source,
        severity=bsa.severity.value,
        region_contributions=contributions,
        iga=req.iga,
        pga_x_bsa=None if pga is None else _float(pga),
        pga_scale=None if pga is None else "iga_0_4",
    )


def compute_dlqi(dlqi: DlqiIn) -> DlqiScoreResponse:
    result = _dlqi(dlqi)
    assert result is not None
    note = None
    if result.total is None:
        note = f"{result.unanswered} items unanswered: no total (Cardiff rule allows at most one)"
    elif result.unanswered == 1:
        note = "one item unanswered, scored 0 (Cardiff rule)"
    return DlqiScoreResponse(
        dlqi=result.total,
        band=None if result.band is None else result.band.value,
        item_scores=list(result.item_scores),
        unanswered=result.unanswered,
        note=note,
    )
