"""PASI scoring (Fredriksson & Pettersson, Dermatologica 1978).

PASI = sum of weight x (E + I + S) x area_score over head/neck (0.1), upper limbs (0.2),
trunk (0.3) and lower limbs (0.4). The worked examples below are computed by hand from that
formula; the comments show the arithmetic in tenths (weights 1, 2, 3, 4 tenths).
"""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError, asdict, replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.scoring.errors import ScoringInputError
from app.scoring.pasi import (
    AREA_SCORE_MAX,
    PASI_MAX_TENTHS,
    REGION_WEIGHT_TENTHS,
    SEVERITY_MAX,
    PasiScore,
    Region,
    RegionSigns,
    area_score_for_percent,
    checked_percent,
    checked_region_percent,
    score_pasi,
    tenths_to_decimal,
)

H, U, T, L = Region.HEAD_NECK, Region.UPPER_LIMBS, Region.TRUNK, Region.LOWER_LIMBS
CLEAR = RegionSigns(0, 0, 0, area_score=0)


def body(
    head: RegionSigns = CLEAR,
    upper: RegionSigns = CLEAR,
    trunk: RegionSigns = CLEAR,
    lower: RegionSigns = CLEAR,
) -> dict[Region, RegionSigns]:
    return {H: head, U: upper, T: trunk, L: lower}


def pasi(**regions: RegionSigns) -> int:
    return score_pasi(body(**regions)).total_tenths


# --- worked examples ---------------------------------------------------------------------


def test_spec_section_4_example_body_scores_28_point_7() -> None:
    # SPEC section 4 request body, worked by hand:
    # head  E2 I2 S3 = 7,  20 % -> area 2:  0.1 x 7 x 2 =  1.4  (1 x 7 x 2 =  14 tenths)
    # upper E3 I2 S3 = 8,  35 % -> area 3:  0.2 x 8 x 3 =  4.8  (2 x 8 x 3 =  48 tenths)
    # trunk E3 I3 S3 = 9,  40 % -> area 3:  0.3 x 9 x 3 =  8.1  (3 x 9 x 3 =  81 tenths)
    # lower E3 I3 S3 = 9,  area_score 4:    0.4 x 9 x 4 = 14.4  (4 x 9 x 4 = 144 tenths)
    # PASI = 1.4 + 4.8 + 8.1 + 14.4 = 28.7 (287 tenths)
    score = score_pasi(
        {
            Region.HEAD_NECK: RegionSigns(2, 2, 3, area_percent=Decimal(20)),
            Region.UPPER_LIMBS: RegionSigns(3, 2, 3, area_percent=Decimal(35)),
            Region.TRUNK: RegionSigns(3, 3, 3, area_percent=Decimal(40)),
            Region.LOWER_LIMBS: RegionSigns(3, 3, 3, area_score=4),
        }
    )
    assert score.total_tenths == 287
    assert tenths_to_decimal(score.total_tenths) == Decimal("28.7")
    assert [r.area_score for r in score.regions.values()] == [2, 3, 3, 4]
    assert [r.severity_sum for r in score.regions.values()] == [7, 8, 9, 9]
    assert [r.contribution_tenths for r in score.regions.values()] == [14, 48, 81, 144]


def test_float_trap_point_three_times_two_plus_point_four_times_six_is_exactly_three() -> None:
    # SPEC section 2: in floats 0.3*2 + 0.4*6 = 3.0000000000000004 and fails "PASI <= 3".
    # trunk E1 I0 S0 = 1, 10 % -> area 2: 0.3 x (1 x 2) = 0.6  (3 x 1 x 2 =  6 tenths)
    # lower E2 I0 S0 = 2, 30 % -> area 3: 0.4 x (2 x 3) = 2.4  (4 x 2 x 3 = 24 tenths)
    # PASI = 0.6 + 2.4 = 3.0 (30 tenths), so "PASI <= 3" holds.
    total = pasi(
        trunk=RegionSigns(1, 0, 0, area_percent=Decimal(10)),
        lower=RegionSigns(2, 0, 0, area_percent=Decimal(30)),
    )
    assert total == 30
    assert tenths_to_decimal(total) == Decimal(3)
    assert total <= 30


def test_float_trap_one_point_one_to_four_point_four_sums_to_exactly_eleven() -> None:
    # SPEC section 2: in floats 1.1 + 2.2 + 3.3 + 4.4 = 11.000000000000002 > 11.
    # Every region E4 I4 S3 = 11 with area score 1 (5 %):
    # head 1x11x1 = 11, upper 2x11x1 = 22, trunk 3x11x1 = 33, lower 4x11x1 = 44 tenths
    # PASI = 1.1 + 2.2 + 3.3 + 4.4 = 11.0 (110 tenths): not > 11.
    signs = RegionSigns(4, 4, 3, area_percent=Decimal(5))
    score = score_pasi(body(signs, signs, signs, signs))
    assert [r.contribution_tenths for r in score.regions.values()] == [11, 22, 33, 44]
    assert score.total_tenths == 110
    assert not score.total_tenths > 110


def test_maximal_pasi_is_72() -> None:
    # Every sign 4 (sum 12), every area 90-100 % (score 6):
    # (1 + 2 + 3 + 4) tenths x 12 x 6 = 10 x 72 = 720 tenths = 72.0
    worst = RegionSigns(4, 4, 4, area_percent=Decimal(100))
    assert pasi(head=worst, upper=worst, trunk=worst, lower=worst) == 720 == PASI_MAX_TENTHS
    assert tenths_to_decimal(PASI_MAX_TENTHS) == Decimal("72.0")


def test_all_zero_body_scores_zero() -> None:
    # No signs, no area: every term is 0 x 0 x 0 = 0.
    zero = RegionSigns(0, 0, 0, area_percent=Decimal(0))
    assert pasi(head=zero, upper=zero, trunk=zero, lower=zero) == 0
    assert tenths_to_decimal(0) == Decimal("0.0")


def test_head_only_slight_disease_on_five_percent_scores_point_three() -> None:
    # head E1 I1 S1 = 3, 5 % -> area 1: 0.1 x 3 x 1 = 0.3 (3 tenths); other regions clear.
    assert pasi(head=RegionSigns(1, 1, 1, area_percent=Decimal(5))) == 3


def test_lower_limbs_only_very_marked_on_ninety_five_percent_scores_28_point_8() -> None:
    # lower E4 I4 S4 = 12, 95 % -> area 6: 0.4 x 12 x 6 = 28.8 (4 x 12 x 6 = 288 tenths).
    assert pasi(lower=RegionSigns(4, 4, 4, area_percent=Decimal(95))) == 288


def test_signs_without_area_and_area_without_signs_score_zero() -> None:
    # upper E4 I4 S4 = 12 but 0 % -> area 0: 0.2 x 12 x 0 = 0
    # trunk E0 I0 S0 = 0 on 80 % -> area 5: 0.3 x 0 x 5 = 0
    assert (
        pasi(
            upper=RegionSigns(4, 4, 4, area_percent=Decimal(0)),
            trunk=RegionSigns(0, 0, 0, area_percent=Decimal(80)),
        )
        == 0
    )


def test_mixed_percent_and_score_body_scores_24() -> None:
    # head  E1 I2 S1 = 4, area_score 3:  1 x 4 x 3 =  12 tenths
    # upper E2 I2 S2 = 6, 50 % -> 4:     2 x 6 x 4 =  48 tenths
    # trunk E0 I1 S2 = 3, 69.99 % -> 4:  3 x 3 x 4 =  36 tenths
    # lower E3 I2 S1 = 6, 90 % -> 6:     4 x 6 x 6 = 144 tenths
    # PASI = 1.2 + 4.8 + 3.6 + 14.4 = 24.0 (240 tenths)
    total = pasi(
        head=RegionSigns(1, 2, 1, area_score=3),
        upper=RegionSigns(2, 2, 2, area_percent=Decimal(50)),
        trunk=RegionSigns(0, 1, 2, area_percent=Decimal("69.99")),
        lower=RegionSigns(3, 2, 1, area_percent=Decimal(90)),
    )
    assert total == 240


def test_uniform_disease_scores_severity_sum_times_area() -> None:
    # Same E2 I2 S2 = 6 and area 2 (25 %) everywhere; weights sum to 1, so PASI = 6 x 2 = 12:
    # 1x6x2 + 2x6x2 + 3x6x2 + 4x6x2 = 12 + 24 + 36 + 48 = 120 tenths = 12.0
    signs = RegionSigns(2, 2, 2, area_percent=Decimal(25))
    assert pasi(head=signs, upper=signs, trunk=signs, lower=signs) == 120


def test_trunk_only_moderate_on_ten_percent_scores_3_point_6() -> None:
    # trunk E2 I3 S1 = 6, 10 % -> area 2: 0.3 x 6 x 2 = 3.6 (3 x 6 x 2 = 36 tenths)
    assert pasi(trunk=RegionSigns(2, 3, 1, area_percent=Decimal(10))) == 36


def test_baseline_2_8_to_0_7_is_exactly_pasi_75() -> None:
    # SPEC section 2 float trap: (2.8 - 0.7) / 2.8 x 100 = 74.99999999999999 in floats.
    # baseline: lower E3 I2 S2 = 7, 5 % -> 1: 4 x 7 x 1 = 28 tenths (2.8)
    # follow-up: head E3 I2 S2 = 7, 5 % -> 1: 1 x 7 x 1 =  7 tenths (0.7)
    # in tenths: 100 x (28 - 7) = 2100 >= 75 x 28 = 2100, so PASI 75 is reached exactly.
    signs = RegionSigns(3, 2, 2, area_percent=Decimal(5))
    baseline = pasi(lower=signs)
    follow_up = pasi(head=signs)
    assert (baseline, follow_up) == (28, 7)
    assert 100 * (baseline - follow_up) >= 75 * baseline


def test_area_percent_and_equivalent_area_score_give_the_same_pasi() -> None:
    # upper E3 I3 S2 = 8: 45 % -> 3 and area_score 3 both give 2 x 8 x 3 = 48 tenths.
    assert pasi(upper=RegionSigns(3, 3, 2, area_percent=Decimal(45))) == 48
    assert pasi(upper=RegionSigns(3, 3, 2, area_score=3)) == 48


# --- area bins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        ("0", 0),
        ("0.01", 1),
        ("9.99", 1),
        ("10", 2),
        ("29.99", 2),
        ("30", 3),
        ("49.99", 3),
        ("50", 4),
        ("69.99", 4),
        ("70", 5),
        ("89.99", 5),
        ("90", 6),
        ("100", 6),
    ],
)
def test_area_bin_boundaries(percent: str, expected: int) -> None:
    assert area_score_for_percent(Decimal(percent)) == expected


def test_area_of_ten_percent_scores_two() -> None:
    assert area_score_for_percent(Decimal("10.00")) == 2


def test_tiny_positive_area_scores_one() -> None:
    assert area_score_for_percent(Decimal("0.00000000000000000001")) == 1


def test_area_percent_in_exponent_notation_is_accepted() -> None:
    assert area_score_for_percent(Decimal("1E+2")) == 6
    assert area_score_for_percent(Decimal("0E-5")) == 0
    assert area_score_for_percent(Decimal("-0")) == 0


def test_area_percent_as_int_is_accepted() -> None:
    assert area_score_for_percent(70) == 5  # type: ignore[arg-type]


@pytest.mark.parametrize("percent", ["-0.01", "100.01", "NaN", "Infinity", "-Infinity", "sNaN"])
def test_area_percent_outside_0_to_100_is_rejected(percent: str) -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        area_score_for_percent(Decimal(percent))
    assert excinfo.value.field == "area_percent"
    assert excinfo.value.rule == "must be a number from 0 to 100"
    assert str(excinfo.value) == "area_percent: must be a number from 0 to 100"


@pytest.mark.parametrize("percent", [True, "20", None, 20.0])
def test_area_percent_of_another_type_is_rejected(percent: object) -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        area_score_for_percent(percent)  # type: ignore[arg-type]
    assert excinfo.value.field == "area_percent"


def test_area_percent_with_absurd_precision_is_rejected_not_computed() -> None:
    with pytest.raises(ScoringInputError, match="decimal places"):
        area_score_for_percent(Decimal("1E-999999999"))


def test_trailing_zeros_do_not_count_as_decimal_places() -> None:
    assert area_score_for_percent(Decimal("20." + "0" * 1000)) == 2


# --- per-region output -------------------------------------------------------------------


def test_regions_come_back_in_declaration_order_with_sub_scores() -> None:
    score = score_pasi(
        {
            L: RegionSigns(1, 1, 1, area_score=1),
            T: RegionSigns(1, 1, 1, area_score=1),
            U: RegionSigns(1, 1, 1, area_score=1),
            H: RegionSigns(1, 1, 1, area_score=1),
        }
    )
    assert list(score.regions) == [H, U, T, L]
    assert all(score.regions[r].region is r for r in Region)
    assert [r.contribution_tenths for r in score.regions.values()] == [3, 6, 9, 12]


def test_string_region_keys_are_accepted() -> None:
    regions = {str(r): RegionSigns(1, 0, 0, area_score=1) for r in Region}
    assert score_pasi(regions).total_tenths == 10  # type: ignore[arg-type]


def test_scores_are_immutable_and_serialisable() -> None:
    score = score_pasi(body(head=RegionSigns(1, 1, 1, area_score=1)))
    with pytest.raises(FrozenInstanceError):
        score.total_tenths = 0  # type: ignore[misc]
    assert asdict(score)["regions"][H]["contribution_tenths"] == 3
    assert pickle.loads(pickle.dumps(score)) == score
    assert isinstance(score, PasiScore)


@pytest.mark.parametrize(
    ("tenths", "expected"),
    [(186, "18.6"), (0, "0.0"), (720, "72.0"), (7, "0.7"), (-186, "-18.6")],
)
def test_tenths_to_decimal_is_exact(tenths: int, expected: str) -> None:
    result = tenths_to_decimal(tenths)
    assert result == Decimal(expected)
    assert str(result) == expected


def test_tenths_to_decimal_refuses_non_integers() -> None:
    with pytest.raises(TypeError):
        tenths_to_decimal(18.6)  # type: ignore[arg-type]


# --- rejected input ----------------------------------------------------------------------


@pytest.mark.parametrize("region", list(Region))
def test_missing_region_is_rejected(region: Region) -> None:
    regions = body()
    del regions[region]
    with pytest.raises(ScoringInputError) as excinfo:
        score_pasi(regions)
    assert (excinfo.value.field, excinfo.value.rule) == (str(region), "is required")


def test_unknown_region_key_is_rejected() -> None:
    regions: dict[object, RegionSigns] = {**body(), "trunkk": CLEAR}  # type: ignore[dict-item]
    with pytest.raises(ScoringInputError) as excinfo:
        score_pasi(regions)  # type: ignore[arg-type]
    assert excinfo.value.field == "trunkk"


@pytest.mark.parametrize("sign", ["erythema", "induration", "desquamation"])
@pytest.mark.parametrize("value", [-1, 5, True, False, 2.5, "3", None, Decimal(2)])
def test_severity_must_be_an_integer_from_0_to_4(sign: str, value: object) -> None:
    signs = replace(CLEAR, **{sign: value})  # type: ignore[arg-type]
    with pytest.raises(ScoringInputError) as excinfo:
        score_pasi(body(trunk=signs))
    assert excinfo.value.field == f"trunk/{sign}"
    assert excinfo.value.rule == "must be an integer from 0 to 4"


@pytest.mark.parametrize("value", [-1, 7, True, 3.0])
def test_area_score_must_be_an_integer_from_0_to_6(value: object) -> None:
    signs = RegionSigns(1, 1, 1, area_score=value)  # type: ignore[arg-type]
    with pytest.raises(ScoringInputError) as excinfo:
        score_pasi(body(upper=signs))
    assert excinfo.value.field == "upper_limbs/area_score"
    assert excinfo.value.rule == "must be an integer from 0 to 6"


@pytest.mark.parametrize("percent", ["-0.01", "100.01"])
def test_region_area_percent_out_of_range_names_the_region(percent: str) -> None:
    signs = RegionSigns(1, 1, 1, area_percent=Decimal(percent))
    with pytest.raises(ScoringInputError) as excinfo:
        score_pasi(body(lower=signs))
    assert excinfo.value.field == "lower_limbs/area_percent"
    assert excinfo.value.rule == "must be a number from 0 to 100"


def test_both_area_percent_and_area_score_is_rejected() -> None:
    signs = RegionSigns(1, 1, 1, area_percent=Decimal(20), area_score=2)
    with pytest.raises(ScoringInputError) as excinfo:
        score_pasi(body(head=signs))
    assert excinfo.value.field == "head_neck"
    assert excinfo.value.rule == "give either area_percent or area_score, not both"


def test_neither_area_percent_nor_area_score_is_rejected() -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        score_pasi(body(trunk=RegionSigns(1, 1, 1)))
    assert excinfo.value.field == "trunk"
    assert excinfo.value.rule == "one of area_percent or area_score is required"


def test_scoring_input_error_is_a_value_error_and_pickles() -> None:
    error = ScoringInputError("trunk/erythema", "must be an integer from 0 to 4")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.rule, str(copy)) == (error.field, error.rule, str(error))


# --- properties --------------------------------------------------------------------------

severities = st.integers(min_value=0, max_value=SEVERITY_MAX)
percents = st.decimals(min_value=0, max_value=100, places=2)
area_scores = st.integers(min_value=0, max_value=AREA_SCORE_MAX)


@st.composite
def region_signs(draw: st.DrawFn) -> RegionSigns:
    e, i, s = draw(severities), draw(severities), draw(severities)
    if draw(st.booleans()):
        return RegionSigns(e, i, s, area_percent=draw(percents))
    return RegionSigns(e, i, s, area_score=draw(area_scores))


bodies = st.fixed_dictionaries({region: region_signs() for region in Region})


def test_region_weights_sum_to_ten_tenths() -> None:
    assert sum(REGION_WEIGHT_TENTHS.values()) == 10
    assert dict(REGION_WEIGHT_TENTHS) == {H: 1, U: 2, T: 3, L: 4}


@given(bodies)
def test_pasi_is_within_0_and_720_tenths(regions: dict[Region, RegionSigns]) -> None:
    assert 0 <= score_pasi(regions).total_tenths <= PASI_MAX_TENTHS


@given(bodies)
def test_region_contributions_sum_to_the_total(regions: dict[Region, RegionSigns]) -> None:
    score = score_pasi(regions)
    assert sum(r.contribution_tenths for r in score.regions.values()) == score.total_tenths
    for region, r in score.regions.items():
        assert r.contribution_tenths == (
            REGION_WEIGHT_TENTHS[region] * r.severity_sum * r.area_score
        )


@given(
    bodies,
    st.sampled_from(list(Region)),
    st.sampled_from(["erythema", "induration", "desquamation"]),
)
def test_pasi_is_monotone_in_every_severity(
    regions: dict[Region, RegionSigns], region: Region, sign: str
) -> None:
    before = score_pasi(regions).total_tenths
    signs = regions[region]
    if getattr(signs, sign) < SEVERITY_MAX:
        raised = replace(signs, **{sign: getattr(signs, sign) + 1})
        assert score_pasi({**regions, region: raised}).total_tenths >= before


@given(bodies, st.sampled_from(list(Region)), percents, percents)
def test_pasi_is_monotone_in_every_area_percent(
    regions: dict[Region, RegionSigns], region: Region, a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    base = replace(regions[region], area_percent=None, area_score=None)
    smaller = score_pasi({**regions, region: replace(base, area_percent=low)}).total_tenths
    larger = score_pasi({**regions, region: replace(base, area_percent=high)}).total_tenths
    assert smaller <= larger


@given(bodies, st.sampled_from(list(Region)), area_scores, area_scores)
def test_pasi_is_monotone_in_every_area_score(
    regions: dict[Region, RegionSigns], region: Region, a: int, b: int
) -> None:
    low, high = sorted((a, b))
    base = replace(regions[region], area_percent=None, area_score=None)
    smaller = score_pasi({**regions, region: replace(base, area_score=low)}).total_tenths
    larger = score_pasi({**regions, region: replace(base, area_score=high)}).total_tenths
    assert smaller <= larger


@given(percents, percents)
def test_area_score_is_monotone_in_percent(a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert area_score_for_percent(low) <= area_score_for_percent(high)


# The service's shortcuts around the core must give the very numbers the exact path gives.


@given(st.integers(min_value=0, max_value=720))
def test_tenths_as_float_is_the_float_of_the_exact_decimal(tenths: int) -> None:
    from app.services.scoring import _tenths

    assert _tenths(tenths) == float(tenths_to_decimal(tenths))
    assert repr(_tenths(tenths)) == repr(float(tenths_to_decimal(tenths)))


@given(
    st.one_of(
        st.integers(min_value=0, max_value=100).map(float),
        st.decimals(min_value=0, max_value=100, places=4).map(float),
        st.integers(min_value=0, max_value=100),
    )
)
def test_a_percent_taken_the_short_way_checks_to_the_same_decimal(value: float) -> None:
    from app.schemas.common import as_decimal
    from app.scoring.pasi import checked_percent

    exact = Decimal(repr(value))
    assert as_decimal(value) == exact
    assert str(checked_percent(as_decimal(value), "p")) == str(checked_percent(exact, "p"))


def _canonical_by_hand(value: Decimal) -> str:
    """The canonical spelling `checked_percent` promises, worked out from the digits: no
    exponent, no trailing fractional zeros, no negative zero."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@given(
    st.one_of(
        st.integers(min_value=0, max_value=100).map(Decimal),
        st.integers(min_value=0, max_value=100).flatmap(
            lambda n: st.integers(min_value=-6, max_value=6).map(
                lambda e: Decimal(n).scaleb(-e).scaleb(e)  # 10 as 1E+1, 10.000, ...
            )
        ),
        st.decimals(min_value=0, max_value=100, places=6),
        st.sampled_from([Decimal("-0"), Decimal("0E-7"), Decimal("1E+2"), Decimal("100.000")]),
    )
)
def test_a_checked_percent_is_its_value_spelt_canonically(value: Decimal) -> None:
    """Whole percentages are looked up (`_WHOLE_PERCENTS`), the rest worked out digit by digit:
    both give the value itself, in the one canonical spelling, for a region too."""
    for checked in (checked_percent(value, "p"), checked_region_percent(value, Region.TRUNK)):
        assert type(checked) is Decimal
        assert checked == value
        assert str(checked) == _canonical_by_hand(value)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), True])
def test_a_percent_that_is_not_a_finite_number_is_refused(value: object) -> None:
    with pytest.raises(ScoringInputError):
        checked_region_percent(value, Region.TRUNK)
