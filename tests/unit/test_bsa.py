"""BSA from regional percentages (0.1/0.2/0.3/0.4 weights) or measured; NPF severity bands."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.scoring.bsa import (
    BsaScore,
    BsaSeverity,
    bsa_from_region_percents,
    bsa_severity,
    round_bsa,
    score_bsa,
)
from app.scoring.errors import ScoringInputError
from app.scoring.pasi import Region

H, U, T, L = Region.HEAD_NECK, Region.UPPER_LIMBS, Region.TRUNK, Region.LOWER_LIMBS


def regions(
    head: str = "0", upper: str = "0", trunk: str = "0", lower: str = "0"
) -> dict[Region, Decimal]:
    return {H: Decimal(head), U: Decimal(upper), T: Decimal(trunk), L: Decimal(lower)}


# --- worked examples ---------------------------------------------------------------------


def test_spec_percentages_with_lower_limbs_at_sixty_give_45() -> None:
    # 0.1 x 20 + 0.2 x 35 + 0.3 x 40 + 0.4 x 60 = 2 + 7 + 12 + 24 = 45
    assert bsa_from_region_percents(regions("20", "35", "40", "60")) == Decimal(45)


def test_whole_body_gives_100_and_clear_skin_gives_0() -> None:
    assert bsa_from_region_percents(regions("100", "100", "100", "100")) == Decimal(100)
    assert bsa_from_region_percents(regions()) == Decimal(0)


def test_one_percent_of_head_upper_and_trunk_is_exactly_point_six() -> None:
    # 0.1 + 0.2 + 0.3 = 0.6 exactly (0.6000000000000001 in binary floats)
    result = bsa_from_region_percents(regions("1", "1", "1", "0"))
    assert result == Decimal("0.6")
    assert str(result) == "0.6"


def test_fractional_percentages_are_summed_exactly() -> None:
    # 0.1 x 12.5 + 0.2 x 33.33 + 0.3 x 7.77 + 0.4 x 0.01
    # = 1.25 + 6.666 + 2.331 + 0.004 = 10.251
    assert bsa_from_region_percents(regions("12.5", "33.33", "7.77", "0.01")) == Decimal("10.251")


def test_rounding_is_half_up_to_two_decimals() -> None:
    # lower 5.8625 %: 0.4 x 5.8625 = 2.345 -> 2.35 half up (2.34 with banker's rounding)
    bsa = bsa_from_region_percents(regions(lower="5.8625"))
    assert bsa == Decimal("2.345")
    assert str(round_bsa(bsa)) == "2.35"
    assert str(round_bsa(Decimal(22))) == "22.00"
    assert str(round_bsa(Decimal("0.004"))) == "0.00"


def test_regional_bsa_of_10_004_rounds_to_10_00_but_is_severe() -> None:
    # lower 25.01 %: 0.4 x 25.01 = 10.004 > 10, reported as 10.00
    score = score_bsa(regions(lower="25.01"), None)
    assert score == BsaScore(Decimal("10.004"), "regions", BsaSeverity.SEVERE)
    assert round_bsa(score.bsa_percent) == Decimal("10.00")


# --- severity bands ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bsa", "expected"),
    [
        ("0", BsaSeverity.MILD),
        ("2.99", BsaSeverity.MILD),
        ("2.9999999", BsaSeverity.MILD),
        ("3", BsaSeverity.MODERATE),
        ("10", BsaSeverity.MODERATE),
        ("10.00", BsaSeverity.MODERATE),
        ("10.0000001", BsaSeverity.SEVERE),
        ("10.01", BsaSeverity.SEVERE),
        ("100", BsaSeverity.SEVERE),
    ],
)
def test_bsa_severity_band_boundaries(bsa: str, expected: BsaSeverity) -> None:
    assert bsa_severity(Decimal(bsa)) is expected


@pytest.mark.parametrize(
    ("lower", "bsa", "expected"),
    [
        ("7.475", "2.99", BsaSeverity.MILD),  # 0.4 x 7.475 = 2.99
        ("7.5", "3", BsaSeverity.MODERATE),  # 0.4 x 7.5 = 3.00
        ("25", "10", BsaSeverity.MODERATE),  # 0.4 x 25 = 10.0
        ("25.025", "10.01", BsaSeverity.SEVERE),  # 0.4 x 25.025 = 10.01
    ],
)
def test_regional_bsa_band_boundaries_use_exact_values(
    lower: str, bsa: str, expected: BsaSeverity
) -> None:
    score = score_bsa(regions(lower=lower), None)
    assert score is not None
    assert score.bsa_percent == Decimal(bsa)
    assert score.severity is expected


# --- measured vs regional ----------------------------------------------------------------


def test_measured_bsa_takes_precedence_over_regions() -> None:
    score = score_bsa(regions("20", "35", "40", "60"), Decimal(5))
    assert score == BsaScore(Decimal(5), "measured", BsaSeverity.MODERATE)


def test_measured_bsa_alone_is_used() -> None:
    assert score_bsa(None, Decimal("2.5")) == BsaScore(Decimal("2.5"), "measured", BsaSeverity.MILD)


def test_regions_are_used_when_nothing_is_measured() -> None:
    assert score_bsa(regions("20", "35", "40", "60"), None) == BsaScore(
        Decimal(45), "regions", BsaSeverity.SEVERE
    )


def test_bsa_is_none_when_a_region_lacks_a_percent() -> None:
    partial = {H: Decimal(20), U: Decimal(35), T: Decimal(40)}
    assert score_bsa(partial, None) is None
    with_none: dict[Region, Decimal | None] = {**partial, L: None}
    assert score_bsa(with_none, None) is None


def test_bsa_is_none_without_any_input() -> None:
    assert score_bsa(None, None) is None
    assert score_bsa({}, None) is None


@pytest.mark.parametrize("measured", ["-0.01", "100.01", "NaN"])
def test_measured_bsa_out_of_range_is_rejected(measured: str) -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        score_bsa(None, Decimal(measured))
    assert (excinfo.value.field, excinfo.value.rule) == (
        "bsa_percent",
        "must be a number from 0 to 100",
    )


def test_invalid_region_percent_is_rejected_even_when_measured_wins() -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        score_bsa({T: Decimal("100.01")}, Decimal(5))
    assert excinfo.value.field == "trunk/area_percent"


def test_bsa_from_region_percents_requires_all_four() -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        bsa_from_region_percents({H: Decimal(1), U: Decimal(1), T: Decimal(1)})
    assert (excinfo.value.field, excinfo.value.rule) == ("lower_limbs", "is required")


def test_bsa_from_region_percents_rejects_out_of_range_and_unknown_regions() -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        bsa_from_region_percents(regions(upper="-0.01"))
    assert excinfo.value.field == "upper_limbs/area_percent"
    with pytest.raises(ScoringInputError) as excinfo:
        bsa_from_region_percents({**regions(), "hands": Decimal(1)})  # type: ignore[dict-item]
    assert excinfo.value.field == "hands"


def test_bsa_severity_rejects_out_of_range() -> None:
    with pytest.raises(ScoringInputError, match="bsa_percent"):
        bsa_severity(Decimal("100.5"))


# --- properties --------------------------------------------------------------------------

percents = st.decimals(min_value=0, max_value=100, places=4)


@given(st.fixed_dictionaries(dict.fromkeys(Region, percents)))
def test_bsa_is_within_0_and_100(percent_by_region: dict[Region, Decimal]) -> None:
    bsa = bsa_from_region_percents(percent_by_region)
    assert 0 <= bsa <= 100
    assert 0 <= round_bsa(bsa) <= 100


@given(st.fixed_dictionaries(dict.fromkeys(Region, percents)))
def test_bsa_equals_the_weighted_sum_in_integers(percent_by_region: dict[Region, Decimal]) -> None:
    # Cross-check with integer arithmetic: percents scaled by 10^4, weights in tenths.
    scaled = sum(
        w * int(percent_by_region[r] * 10_000) for r, w in zip(Region, (1, 2, 3, 4), strict=True)
    )
    assert bsa_from_region_percents(percent_by_region) * 100_000 == scaled


_RANK = {BsaSeverity.MILD: 0, BsaSeverity.MODERATE: 1, BsaSeverity.SEVERE: 2}


@given(percents, percents)
def test_bsa_severity_is_monotone(a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert _RANK[bsa_severity(low)] <= _RANK[bsa_severity(high)]
