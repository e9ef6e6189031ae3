"""BSA, the percentage of body surface area involved by psoriasis.

From the four PASI regions, each weighted by its share of an adult's body surface
(Fredriksson & Pettersson 1978): BSA = 0.1*head + 0.2*upper + 0.3*trunk + 0.4*lower. Or
measured directly (the patient's whole hand, palm and fingers, is about 1 %), which then takes
precedence. Computed exactly in Decimal; rounding to two decimals is for reporting only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Underflow,
    localcontext,
)
from enum import StrEnum
from typing import Final, Literal

from app.scoring.errors import ScoringInputError
from app.scoring.pasi import (
    REGION_WEIGHT_TENTHS,
    REGIONS,
    Region,
    checked_percent,
    checked_region_percent,
    tenths_to_decimal,
)

__all__ = [
    "BsaScore",
    "BsaSeverity",
    "bsa_from_region_percents",
    "bsa_severity",
    "round_bsa",
    "score_bsa",
]

# Checked percentages have at most 3 integer digits and PERCENT_MAX_DECIMAL_PLACES decimals,
# so 60 digits hold every sum exactly; the traps turn any rounding into an error, not a result.
EXACT_CONTEXT: Final = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Underflow, Inexact, Rounded],
)
_REPORTING_CONTEXT: Final = Context(prec=60, rounding=ROUND_HALF_UP, traps=[InvalidOperation])

_TWO_PLACES: Final = Decimal("0.01")
_MILD_BELOW: Final = Decimal(3)
_SEVERE_ABOVE: Final = Decimal(10)


class BsaSeverity(StrEnum):
    """US National Psoriasis Foundation convention: < 3 % mild, 3-10 % moderate, > 10 % severe."""

    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


@dataclass(frozen=True, slots=True)
class BsaScore:
    """BSA with where it came from and its severity band (on the exact value)."""

    bsa_percent: Decimal  # exact (unrounded)
    source: Literal["measured", "regions"]
    severity: BsaSeverity


def _reject_unknown_regions(percents: Mapping[Region, object]) -> None:
    for key in percents:
        if key not in REGION_WEIGHT_TENTHS:
            raise ScoringInputError(
                str(key), "is not a PASI region (head_neck, upper_limbs, trunk, lower_limbs)"
            )


def bsa_from_region_percents(percents: Mapping[Region, Decimal]) -> Decimal:
    """Exact 0.1*head + 0.2*upper + 0.3*trunk + 0.4*lower from regional percentages.

    All four regions are required, each 0-100; errors name f"{region}/area_percent", the same
    path as in a PASI body.
    """
    _reject_unknown_regions(percents)
    checked: list[tuple[Region, Decimal]] = []
    for region in REGIONS:
        percent = percents.get(region)
        if percent is None:
            raise ScoringInputError(f"{region}", "is required")
        checked.append((region, checked_region_percent(percent, region)))
    return _weighted_sum(checked)


# Each region's weight as the exact Decimal tenth it is (0.1, 0.2, 0.3, 0.4).
_WEIGHTS: Final[Mapping[Region, Decimal]] = {
    region: tenths_to_decimal(tenths) for region, tenths in REGION_WEIGHT_TENTHS.items()
}


def _weighted_sum(checked: Iterable[tuple[Region, Decimal]]) -> Decimal:
    """The weighted sum of checked percentages, in REGIONS order, in the exact context (its
    own methods: the same arithmetic as inside `localcontext`, without switching contexts)."""
    total = Decimal("0.0")
    for region, percent in checked:
        total = EXACT_CONTEXT.add(total, EXACT_CONTEXT.multiply(_WEIGHTS[region], percent))
    return total


def round_bsa(bsa: Decimal) -> Decimal:
    """BSA to two decimals, half up (for reporting only; bands use the exact value)."""
    value = checked_percent(bsa, "bsa_percent")
    with localcontext(_REPORTING_CONTEXT):
        return value.quantize(_TWO_PLACES, rounding=ROUND_HALF_UP)


def bsa_severity(bsa: Decimal) -> BsaSeverity:
    """Severity band of the exact BSA (US National Psoriasis Foundation convention).

    A regional BSA of 10.004 is reported as 10.00 but is severe.
    """
    return _band(checked_percent(bsa, "bsa_percent"))


def _band(value: Decimal) -> BsaSeverity:
    if value < _MILD_BELOW:
        return BsaSeverity.MILD
    if value <= _SEVERE_ABOVE:
        return BsaSeverity.MODERATE
    return BsaSeverity.SEVERE


def score_bsa(
    region_percents: Mapping[Region, Decimal | None] | None,
    measured_percent: Decimal | None,
) -> BsaScore | None:
    """BSA from a measurement if given, else from the regions if all four give a percentage.

    Returns None when neither is available (e.g. a region scored with area_score only). Region
    percentages that are given are validated even when the measurement wins: invalid input is
    never silently dropped.
    """
    regional: dict[Region, Decimal] = {}
    if region_percents is not None:
        _reject_unknown_regions(region_percents)
        for region in REGIONS:
            percent = region_percents.get(region)
            if percent is not None:
                regional[region] = checked_region_percent(percent, region)
    if measured_percent is not None:
        measured = checked_percent(measured_percent, "bsa_percent")
        return BsaScore(measured, "measured", _band(measured))
    if len(regional) < len(Region):
        return None
    bsa = _weighted_sum(regional.items())  # checked above, in REGIONS order
    return BsaScore(bsa, "regions", _band(bsa))
