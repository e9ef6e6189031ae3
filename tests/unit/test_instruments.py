"""IGA/sPGA, PGA x BSA, DLQI (Finlay & Khan 1994; bands Hongbo et al. 2005), rule of tens."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.scoring.errors import ScoringInputError
from app.scoring.instruments import (
    DlqiAnswers,
    DlqiBand,
    DlqiScore,
    IgaGrade,
    PgaScale,
    dlqi_band,
    pga_x_bsa,
    rule_of_tens,
    score_dlqi,
)

# --- IGA and PGA x BSA -------------------------------------------------------------------


def test_iga_grades_are_0_to_4() -> None:
    assert [int(g) for g in IgaGrade] == [0, 1, 2, 3, 4]
    assert int(IgaGrade.SEVERE) == 4


def test_iga_4_times_bsa_100_is_400() -> None:
    assert pga_x_bsa(4, Decimal(100)) == Decimal(400)
    assert pga_x_bsa(IgaGrade.SEVERE, Decimal(100), PgaScale.IGA_0_4) == Decimal(400)


def test_pga_x_bsa_is_exact() -> None:
    # 3 x 12.34 = 37.02; 3 x 0.1 = 0.3 (0.30000000000000004 in floats)
    assert pga_x_bsa(3, Decimal("12.34")) == Decimal("37.02")
    assert str(pga_x_bsa(3, Decimal("0.1"))) == "0.3"
    assert pga_x_bsa(0, Decimal(55)) == 0


def test_pga_5_is_allowed_on_the_0_to_5_scale() -> None:
    assert pga_x_bsa(5, Decimal(100), PgaScale.PGA_0_5) == Decimal(500)


def test_pga_5_is_rejected_on_the_iga_scale() -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        pga_x_bsa(5, Decimal(10), PgaScale.IGA_0_4)
    assert (excinfo.value.field, excinfo.value.rule) == ("pga", "must be an integer from 0 to 4")


@pytest.mark.parametrize("pga", [-1, 6, True, 2.0])
def test_pga_outside_the_0_to_5_scale_is_rejected(pga: object) -> None:
    with pytest.raises(ScoringInputError, match=r"^pga: must be an integer from 0 to 5$"):
        pga_x_bsa(pga, Decimal(10), PgaScale.PGA_0_5)  # type: ignore[arg-type]


def test_pga_x_bsa_rejects_bsa_out_of_range_and_unknown_scale() -> None:
    with pytest.raises(ScoringInputError, match=r"^bsa_percent: "):
        pga_x_bsa(2, Decimal("100.01"))
    with pytest.raises(ScoringInputError, match=r"^scale: "):
        pga_x_bsa(2, Decimal(1), "pga_0_6")  # type: ignore[arg-type]
    assert pga_x_bsa(2, Decimal(1), "pga_0_5") == 2  # type: ignore[arg-type]


# --- DLQI --------------------------------------------------------------------------------


def answers(*items: int, prevented: bool | None = False, problem: int | None = 0) -> DlqiAnswers:
    """Items 1-6 and 8-10 from nine values; item 7 from its two parts."""
    i1, i2, i3, i4, i5, i6, i8, i9, i10 = items
    return DlqiAnswers(
        item1=i1,
        item2=i2,
        item3=i3,
        item4=i4,
        item5=i5,
        item6=i6,
        item7_prevented=prevented,
        item7_problem=problem,
        item8=i8,
        item9=i9,
        item10=i10,
    )


ALL_ZERO = answers(0, 0, 0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, DlqiBand.NO_EFFECT),
        (1, DlqiBand.NO_EFFECT),
        (2, DlqiBand.SMALL),
        (5, DlqiBand.SMALL),
        (6, DlqiBand.MODERATE),
        (10, DlqiBand.MODERATE),
        (11, DlqiBand.VERY_LARGE),
        (20, DlqiBand.VERY_LARGE),
        (21, DlqiBand.EXTREMELY_LARGE),
        (30, DlqiBand.EXTREMELY_LARGE),
    ],
)
def test_dlqi_band_boundaries(total: int, band: DlqiBand) -> None:
    assert dlqi_band(total) is band


@pytest.mark.parametrize("total", [-1, 31, True, 5.0])
def test_dlqi_band_rejects_totals_outside_0_to_30(total: object) -> None:
    with pytest.raises(ScoringInputError, match=r"^total: must be an integer from 0 to 30$"):
        dlqi_band(total)  # type: ignore[arg-type]


def test_all_answers_not_at_all_scores_zero() -> None:
    assert score_dlqi(ALL_ZERO) == DlqiScore(
        total=0, band=DlqiBand.NO_EFFECT, item_scores=(0,) * 10, unanswered=0
    )


def test_all_answers_very_much_scores_30() -> None:
    score = score_dlqi(answers(3, 3, 3, 3, 3, 3, 3, 3, 3, prevented=True, problem=None))
    assert score.total == 30
    assert score.band is DlqiBand.EXTREMELY_LARGE
    assert score.item_scores == (3,) * 10


def test_item_scores_are_summed_in_item_order() -> None:
    # 1 + 2 + 3 + 0 + 1 + 2 + (item 7: no, a little = 1) + 3 + 0 + 1 = 14 -> very large
    score = score_dlqi(answers(1, 2, 3, 0, 1, 2, 3, 0, 1, prevented=False, problem=1))
    assert score.item_scores == (1, 2, 3, 0, 1, 2, 1, 3, 0, 1)
    assert score.total == 14
    assert score.band is DlqiBand.VERY_LARGE


def test_item7_yes_scores_three() -> None:
    score = score_dlqi(replace(ALL_ZERO, item7_prevented=True, item7_problem=None))
    assert score.item_scores[6] == 3
    assert score.total == 3


@pytest.mark.parametrize(("problem", "expected"), [(2, 2), (1, 1), (0, 0)])
def test_item7_no_then_a_lot_a_little_or_not_at_all(problem: int, expected: int) -> None:
    score = score_dlqi(replace(ALL_ZERO, item7_prevented=False, item7_problem=problem))
    assert score.item_scores[6] == expected
    assert score.total == expected


def test_item7_no_without_second_part_is_unanswered() -> None:
    score = score_dlqi(replace(ALL_ZERO, item7_prevented=False, item7_problem=None))
    assert score.item_scores[6] is None
    assert (score.total, score.unanswered) == (0, 1)


def test_item7_yes_with_a_second_part_is_rejected() -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        score_dlqi(replace(ALL_ZERO, item7_prevented=True, item7_problem=2))
    assert excinfo.value.field == "item7_problem"
    assert excinfo.value.rule == "must be absent when item7_prevented is true"


def test_item7_second_part_without_first_part_is_rejected() -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        score_dlqi(replace(ALL_ZERO, item7_prevented=None, item7_problem=1))
    assert excinfo.value.field == "item7_prevented"
    assert excinfo.value.rule == "is required when item7_problem is given"


@pytest.mark.parametrize("problem", [3, -1, True])
def test_item7_second_part_must_be_0_to_2(problem: object) -> None:
    with pytest.raises(ScoringInputError, match=r"^item7_problem: must be an integer from 0 to 2$"):
        score_dlqi(replace(ALL_ZERO, item7_problem=problem))  # type: ignore[arg-type]


def test_item7_first_part_must_be_a_boolean() -> None:
    with pytest.raises(ScoringInputError, match=r"^item7_prevented: must be true or false$"):
        score_dlqi(replace(ALL_ZERO, item7_prevented=1))  # type: ignore[arg-type]


def test_one_unanswered_item_scores_zero() -> None:
    score = score_dlqi(replace(answers(2, 2, 2, 2, 2, 2, 2, 2, 2, problem=2), item4=None))
    assert score.item_scores[3] is None
    assert score.unanswered == 1
    assert score.total == 18  # 8 items x 2 + item 7 (no, a lot) 2 + item 4 unanswered 0
    assert score.band is DlqiBand.VERY_LARGE


def test_unanswered_item7_alone_scores_zero() -> None:
    score = score_dlqi(replace(ALL_ZERO, item1=3, item7_prevented=None, item7_problem=None))
    assert (score.total, score.unanswered, score.item_scores[6]) == (3, 1, None)


def test_two_unanswered_items_give_no_total() -> None:
    score = score_dlqi(replace(answers(3, 3, 3, 3, 3, 3, 3, 3, 3), item2=None, item9=None))
    assert score.total is None
    assert score.band is None
    assert score.unanswered == 2
    assert score.item_scores == (3, None, 3, 3, 3, 3, 0, 3, None, 3)


def test_nothing_answered_gives_no_total() -> None:
    score = score_dlqi(DlqiAnswers())
    assert (score.total, score.band, score.unanswered) == (None, None, 10)
    assert score.item_scores == (None,) * 10


@pytest.mark.parametrize("item", ["item1", "item3", "item6", "item8", "item10"])
@pytest.mark.parametrize("value", [4, -1, True, 1.5, "2"])
def test_out_of_range_item_is_rejected_with_its_name(item: str, value: object) -> None:
    with pytest.raises(ScoringInputError) as excinfo:
        score_dlqi(replace(ALL_ZERO, **{item: value}))  # type: ignore[arg-type]
    assert excinfo.value.field == item
    assert excinfo.value.rule == "must be an integer from 0 to 3"
    assert str(excinfo.value) == f"{item}: must be an integer from 0 to 3"


item_values = st.one_of(st.none(), st.integers(min_value=0, max_value=3))


@st.composite
def dlqi_answers(draw: st.DrawFn) -> DlqiAnswers:
    prevented = draw(st.one_of(st.none(), st.booleans()))
    problem = (
        draw(st.one_of(st.none(), st.integers(min_value=0, max_value=2)))
        if prevented is False
        else None
    )
    items = {f"item{n}": draw(item_values) for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)}
    return DlqiAnswers(item7_prevented=prevented, item7_problem=problem, **items)


@given(dlqi_answers())
def test_dlqi_total_and_band_are_consistent(dlqi: DlqiAnswers) -> None:
    score = score_dlqi(dlqi)
    assert len(score.item_scores) == 10
    assert score.unanswered == score.item_scores.count(None)
    if score.unanswered >= 2:
        assert score.total is None
        assert score.band is None
    else:
        assert score.total is not None
        assert 0 <= score.total <= 30
        assert score.total == sum(s for s in score.item_scores if s is not None)
        assert score.band is dlqi_band(score.total)


# --- rule of tens (Finlay 2005) ----------------------------------------------------------


def test_bsa_over_ten_alone_is_severe() -> None:
    assert rule_of_tens(Decimal("10.01"), None, None) is True
    assert rule_of_tens(Decimal("10.01"), 0, 0) is True


def test_pasi_over_ten_alone_is_severe() -> None:
    assert rule_of_tens(None, 101, None) is True  # PASI 10.1
    assert rule_of_tens(Decimal(0), 101, 0) is True


def test_dlqi_over_ten_alone_is_severe() -> None:
    assert rule_of_tens(None, None, 11) is True
    assert rule_of_tens(Decimal(0), 0, 11) is True


def test_exactly_ten_everywhere_is_not_severe() -> None:
    assert rule_of_tens(Decimal(10), 100, 10) is False


def test_pasi_eleven_summed_from_tenths_triggers_the_rule() -> None:
    # PASI 1.1 + 2.2 + 3.3 + 4.4 = 11.0 (110 tenths) > 10
    assert rule_of_tens(Decimal(0), 110, 0) is True


def test_rule_of_tens_is_none_when_undecidable() -> None:
    assert rule_of_tens(None, None, None) is None
    assert rule_of_tens(Decimal(5), 50, None) is None
    assert rule_of_tens(None, 100, 10) is None
    assert rule_of_tens(Decimal(10), None, 10) is None


def test_rule_of_tens_rejects_impossible_values() -> None:
    with pytest.raises(ScoringInputError, match=r"^bsa_percent: "):
        rule_of_tens(Decimal(101), None, None)
    with pytest.raises(ScoringInputError, match=r"^pasi_tenths: "):
        rule_of_tens(None, 721, None)
    with pytest.raises(ScoringInputError, match=r"^dlqi_total: "):
        rule_of_tens(None, None, 31)


@given(
    st.one_of(st.none(), st.decimals(min_value=0, max_value=100, places=2)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=720)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
)
def test_rule_of_tens_matches_its_definition(
    bsa: Decimal | None, pasi_tenths: int | None, dlqi: int | None
) -> None:
    known = [
        v
        for v in (bsa, None if pasi_tenths is None else Decimal(pasi_tenths) / 10, dlqi)
        if v is not None
    ]
    result = rule_of_tens(bsa, pasi_tenths, dlqi)
    if any(v > 10 for v in known):
        assert result is True
    elif len(known) == 3:
        assert result is False
    else:
        assert result is None
