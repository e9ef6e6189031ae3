"""The outcome options of the query string (`clearance`, `relapse`, `relapse_threshold`) shared by
the cohort and chart routes, as the per-patient outcomes take them.

`outcome_query` is a dependency that only gathers the values (FastAPI validates their types with
the route's other parameters, after authentication); `OutcomeQuery.options()` turns them into the
core's options in the handler, where a refusal is audited like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, Query

from app.errors import InvalidParameter
from app.scoring.errors import ScoringInputError
from app.scoring.outcomes import OutcomeOptions, compute_outcomes
from app.scoring.relapse import RelapseDefinition
from app.scoring.response import ClearanceCriterion


@dataclass(frozen=True, slots=True)
class OutcomeQuery:
    clearance: ClearanceCriterion
    relapse: RelapseDefinition
    relapse_threshold: float | None

    def options(self) -> OutcomeOptions:
        """The core's options; 422 naming the parameter when they cannot be used (a threshold
        not in tenths, `pasi_above` without a threshold)."""
        options = OutcomeOptions(
            clearance=self.clearance,
            relapse=self.relapse,
            relapse_threshold_tenths=threshold_tenths(self.relapse_threshold),
        )
        try:
            compute_outcomes((), options)  # validates the options; no assessments: no outcomes
        except ScoringInputError as exc:
            raise InvalidParameter(exc.field, exc.rule) from exc
        return options


def threshold_tenths(value: float | None) -> int | None:
    """`relapse_threshold` in exact tenths of PASI (a float from the query string)."""
    if value is None:
        return None
    tenths = Decimal(repr(value)) * 10
    if tenths != tenths.to_integral_value():
        raise InvalidParameter("relapse_threshold", "must be a PASI value in steps of 0.1")
    return int(tenths)


def outcome_query(
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
) -> OutcomeQuery:
    return OutcomeQuery(clearance, relapse, relapse_threshold)


OutcomeQueryDep = Annotated[OutcomeQuery, Depends(outcome_query)]
