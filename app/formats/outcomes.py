"""The outcomes JSON (`GET /v1/patients/{id}/outcomes`) as one pure function of the core's
`Outcomes`. `app.schemas.outcomes.OutcomesOut` documents the same shape for OpenAPI; a test
checks that every answer validates against it and dumps back unchanged.

Numbers: PASI in tenths becomes a float with one decimal; BSA percentages are rounded half up
to two decimals; percent improvement is already rounded to one decimal by the core.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.scoring.outcomes import (
    AssessmentRef,
    Clearance,
    Episode,
    Outcomes,
    Rebound,
    Relapse,
    SeriesPoint,
    TargetResponse,
)

_HUNDREDTHS = Decimal("0.01")


def _pasi(tenths: int) -> float:
    return tenths / 10


def _bsa(value: Decimal | None) -> float | None:
    return None if value is None else float(value.quantize(_HUNDREDTHS, ROUND_HALF_UP))


def _dec(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _point(ref: AssessmentRef) -> dict[str, Any]:
    return {
        "assessment_id": ref.assessment_id,
        "assessed_on": ref.assessed_on.isoformat(),
        "pasi": _pasi(ref.pasi_tenths),
        "bsa_percent": _bsa(ref.bsa_percent),
    }


def _target(t: TargetResponse) -> dict[str, Any]:
    return {
        "reached_now": t.reached_now,
        "first_reached_on": _iso(t.first_reached_on),
        "days": t.days,
        "note": t.note,
    }


def _clearance(c: Clearance) -> dict[str, Any]:
    return {
        "criterion": c.criterion.value,
        "cleared_on": _iso(c.cleared_on),
        "days_to_clearance": c.days_to_clearance,
        "censored": c.censored,
        "days_observed": c.days_observed,
        "lasted_days": c.lasted_days,
        "ongoing": c.ongoing,
        "note": c.note,
    }


def _relapse(r: Relapse) -> dict[str, Any]:
    return {
        "definition": r.definition.value,
        "threshold": None if r.threshold_tenths is None else _pasi(r.threshold_tenths),
        "evaluable_from": _iso(r.evaluable_from),
        "relapsed_on": _iso(r.relapsed_on),
        "days_to_relapse": r.days_to_relapse,
        "relapse_free_days": r.relapse_free_days,
        "censored": r.censored,
        "note": r.note,
    }


def _episode(e: Episode) -> dict[str, Any]:
    return {
        "responded_on": e.responded_on.isoformat(),
        "best_pasi": _pasi(e.best_pasi_tenths),
        "best_on": e.best_on.isoformat(),
        "cleared_on": _iso(e.cleared_on),
        "relapsed_on": _iso(e.relapsed_on),
    }


def _rebound(r: Rebound | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "treatment_id": r.treatment_id,
        "treatment_ended_on": _iso(r.treatment_ended_on),
        "window_days": r.window_days,
        "rebounded": r.rebounded,
        "rebound_on": _iso(r.rebound_on),
        "days_after_end": r.days_after_end,
        "note": r.note,
    }


def series_point_json(p: SeriesPoint) -> dict[str, Any]:
    return {
        "assessment_id": p.assessment_id,
        "assessed_on": p.assessed_on.isoformat(),
        "visit": p.visit,
        "days": p.days,
        "weeks": round(p.days / 7, 1),
        "pasi": p.pasi_tenths / 10,
        "bsa_percent": _bsa(p.bsa_percent),
        "iga": p.iga,
        "percent_improvement": _dec(p.percent_improvement),
        "counts": p.counts,
    }


def outcomes_json(result: Outcomes) -> dict[str, Any]:
    change = result.change
    return {
        "anchor": result.anchor,
        "anchor_on": result.anchor_on.isoformat(),
        "treatment_id": result.treatment_id,
        "baseline": _point(result.baseline),
        "latest": _point(result.latest),
        "change": {
            "pasi_absolute": _pasi(change.pasi_absolute_tenths),
            "percent_improvement": _dec(change.percent_improvement),
            "bsa_absolute": _bsa(change.bsa_absolute),
            "note": change.note,
        },
        "responses": {name: _target(t) for name, t in result.responses.items()},
        "clearance": _clearance(result.clearance),
        "relapse": _relapse(result.relapse),
        "episodes": [_episode(e) for e in result.episodes],
        "rebound": _rebound(result.rebound),
        "series": [series_point_json(p) for p in result.series],
        "notes": list(result.notes),
    }
