"""PASI, the Psoriasis Area and Severity Index (Fredriksson & Pettersson, Dermatologica 1978).

PASI = sum over the four regions of weight x (E + I + S) x area_score, range 0-72. The weights
are whole tenths (0.1, 0.2, 0.3, 0.4) and everything else is an integer, so PASI is always a
whole number of tenths: it is computed and returned in integer tenths, never as a binary float
(0.3*2 + 0.4*6 is 3.0000000000000004 in floats and would fail "PASI <= 3").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from app.scoring.errors import ScoringInputError

__all__ = [
    "AREA_SCORE_MAX",
    "PASI_MAX_TENTHS",
    "PERCENT_MAX_DECIMAL_PLACES",
    "REGIONS",
    "REGION_WEIGHT_TENTHS",
    "SEVERITY_MAX",
    "PasiScore",
    "Region",
    "RegionScore",
    "RegionSigns",
    "area_score_for_percent",
    "checked_int",
    "checked_percent",
    "checked_region_percent",
    "score_pasi",
    "tenths_to_decimal",
]


class Region(StrEnum):
    """The four PASI body regions, in the order of the original paper."""

    HEAD_NECK = "head_neck"
    UPPER_LIMBS = "upper_limbs"
    TRUNK = "trunk"  # axillae and genitalia included
    LOWER_LIMBS = "lower_limbs"  # buttocks included


# Each region's share of an adult's body surface, in tenths (Fredriksson & Pettersson 1978).
# There are no paediatric PASI weights; the child weights some sites show are EASI's.
REGION_WEIGHT_TENTHS: Final[Mapping[Region, int]] = MappingProxyType(
    {Region.HEAD_NECK: 1, Region.UPPER_LIMBS: 2, Region.TRUNK: 3, Region.LOWER_LIMBS: 4}
)
REGIONS: Final[tuple[Region, ...]] = tuple(Region)
"""The regions in declaration order, iterated without going through the enum's machinery."""

SEVERITY_MAX: Final = 4  # 0 none, 1 slight, 2 moderate, 3 marked, 4 very marked
AREA_SCORE_MAX: Final = 6
PASI_MAX_TENTHS: Final = 720  # 10 tenths x 12 x 6

# Not a clinical rule: a bound that keeps exact Decimal arithmetic cheap (an input such as
# 1E-999999999 would otherwise need a billion digits to add exactly). Far beyond any
# meaningful precision of a clinical percentage, and beyond the 17 digits of a float repr.
PERCENT_MAX_DECIMAL_PLACES: Final = 20

_PERCENT_RULE: Final = "must be a number from 0 to 100"

# Lower bound (inclusive) of each area score above 0, highest first (Fredriksson & Pettersson
# 1978: 0 %, < 10 %, 10-29 %, 30-49 %, 50-69 %, 70-89 %, 90-100 %).
_AREA_BINS: Final[tuple[tuple[Decimal, int], ...]] = (
    (Decimal(90), 6),
    (Decimal(70), 5),
    (Decimal(50), 4),
    (Decimal(30), 3),
    (Decimal(10), 2),
)


def checked_int(value: object, field: str, maximum: int) -> int:
    """Return `value` if it is an integer from 0 to `maximum`.

    bool is rejected although Python treats it as an int: `true` is not a severity.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ScoringInputError(field, f"must be an integer from 0 to {maximum}")
    return int(value)


def checked_percent(value: object, field: str) -> Decimal:
    """Return a percentage from 0 to 100 as an exact Decimal in canonical form.

    Accepts Decimal and int (not bool); a binary float is refused because it is not the number
    the user wrote. The result has no exponent notation, no trailing fractional zeros and no
    negative zero, so arithmetic on it stays short and exact.
    """
    if type(value) is int and 0 <= value <= 100:  # the common case, already canonical
        return _WHOLE_PERCENTS[value]
    if type(value) is Decimal:
        whole = _whole_percent(value)
        if whole is not None:
            return whole
    if isinstance(value, float):
        raise ScoringInputError(field, "must be an exact decimal number, not a binary float")
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ScoringInputError(field, _PERCENT_RULE)
    number = Decimal(value)
    if not number.is_finite() or not 0 <= number <= 100:
        raise ScoringInputError(field, _PERCENT_RULE)
    if number == 0:
        return Decimal(0)
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent == 0 and not sign:  # an integer written without a fraction: canonical
        return number
    coefficient = list(digits)
    while exponent < 0 and len(coefficient) > 1 and coefficient[-1] == 0:
        coefficient.pop()
        exponent += 1
    if -exponent > PERCENT_MAX_DECIMAL_PLACES:
        raise ScoringInputError(
            field, f"must have at most {PERCENT_MAX_DECIMAL_PLACES} decimal places"
        )
    if exponent > 0:  # e.g. 1E+2: spell it out as 100 (bounded: the value is at most 100)
        coefficient.extend([0] * exponent)
        exponent = 0
    return Decimal((0, tuple(coefficient), exponent))


def checked_region_percent(value: object, region: Region) -> Decimal:
    """`checked_percent` of a region's `area_percent`, its field's name built only to refuse."""
    if type(value) is Decimal:
        whole = _whole_percent(value)
        if whole is not None:
            return whole
    return checked_percent(value, f"{region}/area_percent")


# Every whole percentage in canonical form, looked up by value: Decimal("10.0"), Decimal("1E+1")
# and Decimal(10) are equal and hash alike, and `checked_percent` makes each of them
# Decimal("10"). Most percentages are whole numbers, and each is checked several times on its
# way through PASI, BSA, PGA x BSA and the rule of tens: a lookup instead of `as_tuple`.
_WHOLE_PERCENTS: Final[dict[object, Decimal]] = {n: Decimal(n) for n in range(101)}


def _whole_percent(value: Decimal) -> Decimal | None:
    """The canonical form of a Decimal that is a whole percentage, else None (a fraction, out of
    range, or not finite: left to `checked_percent`)."""
    try:
        return _WHOLE_PERCENTS.get(value)
    except TypeError:  # a signalling NaN cannot be hashed
        return None


def _area_score(percent: object, field: str) -> int:
    return _area_bin(checked_percent(percent, field))


def _area_bin(value: Decimal) -> int:
    if value == 0:
        return 0
    for lower_bound, score in _AREA_BINS:
        if value >= lower_bound:
            return score
    return 1  # > 0 and < 10 %


def area_score_for_percent(percent: Decimal) -> int:
    """Area score 0-6 for the percentage of a region involved (SPEC section 2 table).

    Compared exactly: 9.99 % scores 1, 10 % scores 2.
    """
    return _area_score(percent, "area_percent")


@dataclass(frozen=True, slots=True)
class RegionSigns:
    """Inputs for one region: E, I, S each 0-4, and either area_percent or area_score."""

    erythema: int
    induration: int
    desquamation: int
    area_percent: Decimal | None = None
    area_score: int | None = None


@dataclass(frozen=True, slots=True)
class RegionScore:
    """One region's sub-scores; contribution_tenths = weight_tenths * severity_sum * area_score."""

    region: Region
    area_score: int
    severity_sum: int  # E + I + S, 0-12
    contribution_tenths: int


@dataclass(frozen=True, slots=True)
class PasiScore:
    """PASI in integer tenths (186 means 18.6) with the per-region sub-scores."""

    total_tenths: int
    regions: Mapping[Region, RegionScore]  # in Region declaration order


def _severity(value: object, region: Region, sign: str) -> int:
    if type(value) is int and 0 <= value <= SEVERITY_MAX:  # the common case
        return value
    return checked_int(value, f"{region}/{sign}", SEVERITY_MAX)  # names the field if invalid


def _score_region(region: Region, signs: RegionSigns) -> RegionScore:
    severity_sum = (
        _severity(signs.erythema, region, "erythema")
        + _severity(signs.induration, region, "induration")
        + _severity(signs.desquamation, region, "desquamation")
    )
    if signs.area_percent is not None and signs.area_score is not None:
        raise ScoringInputError(f"{region}", "give either area_percent or area_score, not both")
    if signs.area_percent is not None:
        area = _area_bin(checked_region_percent(signs.area_percent, region))
    elif signs.area_score is not None:
        area = checked_int(signs.area_score, f"{region}/area_score", AREA_SCORE_MAX)
    else:
        raise ScoringInputError(f"{region}", "one of area_percent or area_score is required")
    return RegionScore(
        region=region,
        area_score=area,
        severity_sum=severity_sum,
        contribution_tenths=REGION_WEIGHT_TENTHS[region] * severity_sum * area,
    )


def score_pasi(regions: Mapping[Region, RegionSigns]) -> PasiScore:
    """Score PASI from all four regions (Fredriksson & Pettersson 1978).

    A key that is not a region is rejected rather than ignored, so a misspelt region cannot
    silently score 0.
    """
    for key in regions:
        if key not in REGION_WEIGHT_TENTHS:
            raise ScoringInputError(
                str(key), "is not a PASI region (head_neck, upper_limbs, trunk, lower_limbs)"
            )
    scores: dict[Region, RegionScore] = {}
    for region in REGIONS:
        signs = regions.get(region)
        if signs is None:
            raise ScoringInputError(f"{region}", "is required")
        scores[region] = _score_region(region, signs)
    total = sum(score.contribution_tenths for score in scores.values())
    return PasiScore(total_tenths=total, regions=scores)


def tenths_to_decimal(tenths: int) -> Decimal:
    """Exact Decimal for a count of tenths: 186 -> Decimal('18.6'), 0 -> Decimal('0.0')."""
    if isinstance(tenths, bool) or not isinstance(tenths, int):
        raise TypeError(f"tenths must be an int, not {type(tenths).__name__}")
    sign, digits, _exponent = Decimal(tenths).as_tuple()
    return Decimal((sign, digits, -1))
