"""Hand-worked timelines for app.scoring.outcomes (SPEC section 3 and the section 4 example)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest

from app.scoring.errors import ScoringInputError
from app.scoring.outcomes import (
    AssessmentRef,
    Change,
    Clearance,
    ClearanceCriterion,
    DatedScore,
    Episode,
    OutcomeOptions,
    Outcomes,
    Rebound,
    Relapse,
    RelapseDefinition,
    TargetResponse,
    TreatmentCourse,
    compute_outcomes,
    percent_improvement,
    reaches_pasi_response,
)

DAY0 = date(2020, 1, 6)
RESPONSE_KEYS = [
    "pasi50",
    "pasi75",
    "pasi90",
    "pasi100",
    "pasi_le_1",
    "pasi_le_2",
    "pasi_le_3",
    "pasi_le_5",
]


def d(days: int) -> date:
    return DAY0 + timedelta(days=days)


def score(
    day: int | date,
    pasi: int,
    *,
    aid: str | None = None,
    bsa: str | None = None,
    iga: int | None = None,
    baseline: bool = False,
    minute: int = 0,
) -> DatedScore:
    on = d(day) if isinstance(day, int) else day
    return DatedScore(
        assessment_id=aid or f"a-{on.isoformat()}-{minute}",
        assessed_on=on,
        recorded_at=datetime(on.year, on.month, on.day, 9, tzinfo=UTC) + timedelta(minutes=minute),
        pasi_tenths=pasi,
        bsa_percent=Decimal(bsa) if bsa is not None else None,
        iga=iga,
        is_baseline=baseline,
    )


def timeline(points: Sequence[tuple[int, int]]) -> list[DatedScore]:
    """(day, pasi tenths) pairs; the first is the baseline by being earliest."""
    return [score(day, pasi) for day, pasi in points]


def run(
    assessments: Sequence[DatedScore],
    options: OutcomeOptions | None = None,
    treatments: Sequence[TreatmentCourse] = (),
) -> Outcomes:
    result = compute_outcomes(assessments, options or OutcomeOptions(), treatments)
    assert result is not None
    return result


# --------------------------------------------------------------------------- SPEC section 4


def spec_example_timeline() -> list[DatedScore]:
    return [
        score(date(2019, 3, 4), 186, aid="base", bsa="22.0", iga=4),
        score(date(2019, 4, 15), 120, aid="w6", bsa="15.0", iga=3),
        score(date(2019, 5, 27), 90, aid="w12", bsa="9.5", iga=2),
        score(date(2019, 7, 22), 40, aid="w20", bsa="4.0", iga=2),
        score(date(2019, 9, 2), 25, aid="w26", bsa="2.0", iga=1),
        score(date(2019, 10, 14), 0, aid="w32", bsa="0.0", iga=0),
        score(date(2020, 4, 6), 0, aid="w56", bsa="0.0", iga=0),
        score(date(2021, 2, 1), 0, aid="w100", bsa="0.0", iga=0),
    ]


def test_spec_section4_outcome_example_is_reproduced_field_by_field() -> None:
    assessments = spec_example_timeline()
    random.Random(4).shuffle(assessments)  # input order is arbitrary
    out = run(assessments)

    assert out.anchor == "baseline"
    assert out.anchor_on == date(2019, 3, 4)
    assert out.treatment_id is None
    assert out.baseline == AssessmentRef("base", date(2019, 3, 4), 186, Decimal("22.0"))
    assert out.latest == AssessmentRef("w100", date(2021, 2, 1), 0, Decimal("0.0"))
    assert out.change == Change(-186, Decimal("100.0"), Decimal("-22.0"), None)
    assert str(out.change.percent_improvement) == "100.0"
    assert str(out.change.bsa_absolute) == "-22.0"

    assert list(out.responses) == RESPONSE_KEYS
    assert out.responses["pasi50"] == TargetResponse(True, date(2019, 5, 27), 84)
    assert out.responses["pasi75"] == TargetResponse(True, date(2019, 7, 22), 140)
    assert out.responses["pasi90"] == TargetResponse(True, date(2019, 10, 14), 224)
    assert out.responses["pasi100"] == TargetResponse(True, date(2019, 10, 14), 224)
    assert out.responses["pasi_le_1"] == TargetResponse(True, date(2019, 10, 14), 224)
    assert out.responses["pasi_le_2"] == TargetResponse(True, date(2019, 10, 14), 224)
    assert out.responses["pasi_le_3"] == TargetResponse(True, date(2019, 9, 2), 182)
    assert out.responses["pasi_le_5"] == TargetResponse(True, date(2019, 7, 22), 140)

    assert out.clearance == Clearance(
        criterion=ClearanceCriterion.PASI100,
        cleared_on=date(2019, 10, 14),
        days_to_clearance=224,
        censored=False,
        days_observed=700,
        lasted_days=476,
        ongoing=True,
    )
    assert out.relapse == Relapse(
        definition=RelapseDefinition.NPF_50PCT_LOSS,
        threshold_tenths=None,
        evaluable_from=date(2019, 5, 27),
        relapsed_on=None,
        days_to_relapse=None,
        relapse_free_days=616,
        censored=True,
    )
    assert out.episodes == [
        Episode(
            responded_on=date(2019, 5, 27),
            best_pasi_tenths=0,
            best_on=date(2019, 10, 14),
            cleared_on=date(2019, 10, 14),
            relapsed_on=None,
        )
    ]
    assert out.rebound is None

    first = out.series[0]
    assert (first.assessment_id, first.assessed_on, first.days, first.pasi_tenths) == (
        "base",
        date(2019, 3, 4),
        0,
        186,
    )
    assert str(first.percent_improvement) == "0.0"
    assert first.counts is True
    assert [p.assessment_id for p in out.series] == [
        "base",
        "w6",
        "w12",
        "w20",
        "w26",
        "w32",
        "w56",
        "w100",
    ]
    assert [str(p.percent_improvement) for p in out.series] == [
        "0.0",
        "35.5",
        "51.6",
        "78.5",
        "86.6",
        "100.0",
        "100.0",
        "100.0",
    ]
    assert [p.days for p in out.series] == [0, 42, 84, 140, 182, 224, 399, 700]
    assert all(p.counts for p in out.series)
    assert out.notes == []


def test_no_assessments_gives_none() -> None:
    assert compute_outcomes([]) is None


# --------------------------------------------------------------------------- exactness


def test_baseline_2_8_to_0_7_is_exactly_pasi75_not_a_float_miss() -> None:
    out = run(timeline([(0, 28), (84, 7)]))
    assert out.responses["pasi75"] == TargetResponse(True, d(84), 84)
    assert out.responses["pasi90"].reached_now is False
    assert out.change.percent_improvement == Decimal("75.0")


def test_pasi_3_0_meets_pasi_le_3_exactly() -> None:
    # 0.3*2 + 0.4*6 is 3.0000000000000004 in floats; in tenths it is 30.
    out = run(timeline([(0, 120), (28, 30)]))
    assert out.responses["pasi_le_3"] == TargetResponse(True, d(28), 28)
    assert out.responses["pasi_le_2"] == TargetResponse(False, None, None)


def test_pasi_k_response_is_an_exact_integer_comparison() -> None:
    assert reaches_pasi_response(28, 7, 75)
    assert not reaches_pasi_response(28, 8, 75)
    assert reaches_pasi_response(200, 100, 50)
    assert not reaches_pasi_response(200, 101, 50)
    assert not reaches_pasi_response(0, 0, 50)


@pytest.mark.parametrize(
    ("b", "x", "shown"),
    [
        (16, 15, "6.3"),  # 6.25 rounds half up
        (16, 17, "-6.3"),  # ties away from zero when worse
        (186, 90, "51.6"),
        (3, 2, "33.3"),
        (3, 1, "66.7"),
        (10, 30, "-200.0"),
        (28, 7, "75.0"),
        (5, 5, "0.0"),
    ],
)
def test_percent_improvement_is_shown_to_one_decimal_half_up(b: int, x: int, shown: str) -> None:
    value = percent_improvement(b, x)
    assert value is not None
    assert str(value) == shown
    exact = Fraction(100 * (b - x), b)
    expected = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
        Decimal("0.1"), rounding=ROUND_HALF_UP
    )
    assert value == expected


def test_percent_improvement_is_undefined_for_baseline_zero() -> None:
    assert percent_improvement(0, 0) is None


# --------------------------------------------------------------------------- clearance


def test_responder_who_never_clears_is_censored_with_days_observed() -> None:
    out = run(timeline([(0, 200), (30, 90), (60, 40), (90, 30)]))
    assert out.responses["pasi50"] == TargetResponse(True, d(30), 30)
    assert out.responses["pasi75"] == TargetResponse(True, d(60), 60)
    assert out.clearance == Clearance(
        criterion=ClearanceCriterion.PASI100,
        cleared_on=None,
        days_to_clearance=None,
        censored=True,
        days_observed=90,
        lasted_days=None,
        ongoing=None,
    )


def test_patient_who_clears_and_stays_clear_is_ongoing_to_the_latest() -> None:
    out = run(timeline([(0, 150), (28, 20), (56, 0), (84, 0), (140, 0)]))
    assert out.clearance == Clearance(ClearanceCriterion.PASI100, d(56), 56, False, 140, 84, True)


def test_clearance_lasts_until_the_first_later_assessment_not_meeting_it() -> None:
    out = run(timeline([(0, 150), (28, 0), (56, 0), (84, 3), (112, 0)]))
    assert out.clearance.cleared_on == d(28)
    assert out.clearance.lasted_days == 56
    assert out.clearance.ongoing is False
    assert out.clearance.days_observed == 112


@pytest.mark.parametrize(
    ("criterion", "cleared_day"),
    [
        (ClearanceCriterion.PASI100, 60),
        (ClearanceCriterion.PASI90, 40),  # 100*(200-20) = 18000 >= 90*200
        (ClearanceCriterion.PASI_LE_1, 50),
        (ClearanceCriterion.PASI_LE_2, 40),
    ],
)
def test_each_clearance_criterion_uses_its_own_exact_threshold(
    criterion: ClearanceCriterion, cleared_day: int
) -> None:
    out = run(
        timeline([(0, 200), (20, 21), (40, 20), (50, 10), (60, 0)]),
        OutcomeOptions(clearance=criterion),
    )
    assert out.clearance.criterion is criterion
    assert out.clearance.cleared_on == d(cleared_day)
    assert out.clearance.days_to_clearance == cleared_day


def test_iga_0_clearance_ignores_assessments_without_iga() -> None:
    assessments = [
        score(0, 200, iga=4),
        score(30, 50, iga=0),
        score(60, 40),  # no IGA: neither meets nor breaks clearance
        score(90, 30, iga=0),
        score(120, 60, iga=1),
    ]
    out = run(assessments, OutcomeOptions(clearance=ClearanceCriterion.IGA_0))
    assert out.clearance == Clearance(ClearanceCriterion.IGA_0, d(30), 30, False, 120, 90, False)


def test_iga_0_clearance_with_no_iga_recorded_is_censored_with_a_note() -> None:
    out = run(timeline([(0, 200), (30, 0)]), OutcomeOptions(clearance=ClearanceCriterion.IGA_0))
    assert out.clearance.censored is True
    assert out.clearance.cleared_on is None
    assert out.clearance.note is not None


def test_baseline_that_meets_a_target_reaches_it_on_day_0() -> None:
    out = run(timeline([(0, 5), (30, 15)]))
    assert out.responses["pasi_le_1"] == TargetResponse(False, d(0), 0)
    assert out.responses["pasi_le_2"] == TargetResponse(True, d(0), 0)


# --------------------------------------------------------------------------- relapse


def test_relapse_needs_prior_pasi50_response() -> None:
    out = run(timeline([(0, 200), (30, 150), (60, 101), (90, 300)]))
    assert out.responses["pasi50"].first_reached_on is None
    assert out.relapse == Relapse(
        RelapseDefinition.NPF_50PCT_LOSS,
        None,
        None,
        None,
        None,
        None,
        None,
        "no assessment has reached PASI 50 yet, so relapse is not evaluable",
    )
    assert out.episodes == []


def test_npf_relapse_happens_exactly_at_half_the_improvement_lost() -> None:
    # b = 20.0, best = 0: relapse iff 2x >= 0 + 200, i.e. x >= 10.0.
    out = run(timeline([(0, 200), (30, 0), (60, 99), (90, 100), (120, 101)]))
    assert out.relapse == Relapse(
        RelapseDefinition.NPF_50PCT_LOSS, None, d(30), d(90), 60, 60, False
    )


def test_npf_relapse_does_not_happen_just_below_the_threshold() -> None:
    out = run(timeline([(0, 200), (30, 0), (60, 99)]))
    assert out.relapse.relapsed_on is None
    assert out.relapse.censored is True
    assert out.relapse.relapse_free_days == 30
    assert out.relapse.days_to_relapse is None


def test_ema_requires_strictly_more_than_half_the_improvement_lost() -> None:
    points = [(0, 200), (30, 0), (60, 99), (90, 100), (120, 101)]
    npf = run(timeline(points), OutcomeOptions(relapse=RelapseDefinition.NPF_50PCT_LOSS))
    ema = run(timeline(points), OutcomeOptions(relapse=RelapseDefinition.EMA_50PCT_LOSS))
    assert npf.relapse.relapsed_on == d(90)
    assert ema.relapse.relapsed_on == d(120)
    assert ema.relapse.definition is RelapseDefinition.EMA_50PCT_LOSS
    assert ema.relapse.days_to_relapse == 90


def test_relapse_best_is_the_lowest_pasi_before_the_relapse() -> None:
    # best falls to 40 on day 60: threshold 2x >= 240.
    out = run(timeline([(0, 200), (30, 100), (60, 40), (90, 119), (120, 120)]))
    assert out.relapse.relapsed_on == d(120)
    assert out.episodes == [Episode(d(30), 40, d(60), None, d(120))]


def test_loss_of_pasi75_is_evaluable_from_pasi75_and_relapses_below_it() -> None:
    # PASI 75 from baseline 200 means x <= 50.
    points = [(0, 200), (30, 60), (60, 50), (90, 20), (120, 50), (150, 51)]
    out = run(timeline(points), OutcomeOptions(relapse=RelapseDefinition.LOSS_OF_PASI75))
    assert out.relapse == Relapse(
        RelapseDefinition.LOSS_OF_PASI75, None, d(60), d(150), 90, 90, False
    )
    npf = run(timeline(points))
    assert npf.relapse.evaluable_from == d(30)
    assert npf.relapse.relapsed_on is None


def test_loss_of_pasi75_needs_a_pasi75_response() -> None:
    out = run(
        timeline([(0, 200), (30, 60)]),
        OutcomeOptions(relapse=RelapseDefinition.LOSS_OF_PASI75),
    )
    assert out.relapse.evaluable_from is None
    assert out.relapse.note == "no assessment has reached PASI 75 yet, so relapse is not evaluable"


def test_pasi_above_relapses_at_the_first_later_pasi_over_the_threshold() -> None:
    options = OutcomeOptions(
        relapse=RelapseDefinition.PASI_ABOVE,
        relapse_threshold_tenths=50,
    )
    out = run(timeline([(0, 200), (30, 100), (60, 30), (90, 50), (120, 51)]), options)
    assert out.relapse == Relapse(RelapseDefinition.PASI_ABOVE, 50, d(30), d(120), 90, 90, False)


def test_pasi_above_without_threshold_is_an_input_error() -> None:
    with pytest.raises(ScoringInputError) as caught:
        compute_outcomes(timeline([(0, 200)]), OutcomeOptions(relapse=RelapseDefinition.PASI_ABOVE))
    assert caught.value.field == "relapse_threshold"
    assert caught.value.rule == "is required when relapse is pasi_above"


def test_pasi_above_with_negative_threshold_is_an_input_error() -> None:
    with pytest.raises(ScoringInputError) as caught:
        compute_outcomes(
            timeline([(0, 200)]),
            OutcomeOptions(relapse=RelapseDefinition.PASI_ABOVE, relapse_threshold_tenths=-1),
        )
    assert caught.value.field == "relapse_threshold"


def test_relapse_threshold_is_ignored_for_other_definitions() -> None:
    out = run(timeline([(0, 200), (30, 0)]), OutcomeOptions(relapse_threshold_tenths=10))
    assert out.relapse.threshold_tenths is None


def test_two_full_episodes_respond_relapse_respond_relapse() -> None:
    points = [
        (0, 200),
        (10, 100),  # PASI 50: episode 1
        (20, 40),  # best 4.0
        (30, 119),  # 238 < 240
        (40, 120),  # 240 >= 240: relapse 1
        (50, 150),
        (60, 90),  # PASI 50 again: episode 2
        (70, 0),  # best 0, cleared
        (80, 99),
        (90, 100),  # 200 >= 200: relapse 2 (also PASI 50, but episodes start strictly later)
        (100, 100),  # episode 3
    ]
    out = run(timeline(points))
    assert out.episodes == [
        Episode(d(10), 40, d(20), None, d(40)),
        Episode(d(60), 0, d(70), d(70), d(90)),
        Episode(d(100), 100, d(100), None, None),
    ]
    assert out.relapse == Relapse(
        RelapseDefinition.NPF_50PCT_LOSS, None, d(10), d(40), 30, 30, False
    )
    assert out.clearance == Clearance(ClearanceCriterion.PASI100, d(70), 70, False, 100, 10, False)


def test_episode_clearance_follows_the_clearance_option_and_stops_at_its_relapse() -> None:
    points = [(0, 200), (10, 20), (20, 150), (30, 20), (40, 10)]
    out = run(timeline(points), OutcomeOptions(clearance=ClearanceCriterion.PASI_LE_1))
    assert out.episodes == [
        Episode(d(10), 20, d(10), None, d(20)),
        Episode(d(30), 10, d(40), d(40), None),
    ]
    out2 = run(timeline(points), OutcomeOptions(clearance=ClearanceCriterion.PASI_LE_2))
    assert [e.cleared_on for e in out2.episodes] == [d(10), d(30)]


# --------------------------------------------------------------------------- baseline zero


def test_baseline_pasi_zero_gives_null_relative_outcomes_with_notes() -> None:
    out = run(timeline([(0, 0), (30, 0), (60, 30)]))
    assert out.change.percent_improvement is None
    assert out.change.pasi_absolute_tenths == 30
    assert out.change.note is not None
    for key in ("pasi50", "pasi75", "pasi90", "pasi100"):
        response = out.responses[key]
        assert (response.reached_now, response.first_reached_on, response.days) == (
            None,
            None,
            None,
        )
        assert response.note is not None
    # Absolute targets still apply.
    assert out.responses["pasi_le_1"] == TargetResponse(False, d(0), 0)
    assert out.responses["pasi_le_3"] == TargetResponse(True, d(0), 0)
    assert out.clearance == Clearance(ClearanceCriterion.PASI100, d(0), 0, False, 60, 60, False)
    assert out.relapse.evaluable_from is None
    assert out.relapse.censored is None
    assert out.relapse.relapse_free_days is None
    assert out.relapse.note is not None
    assert out.episodes == []
    assert all(p.percent_improvement is None for p in out.series)
    assert out.notes


def test_baseline_pasi_zero_makes_pasi90_clearance_not_evaluable() -> None:
    out = run(timeline([(0, 0), (30, 0)]), OutcomeOptions(clearance=ClearanceCriterion.PASI90))
    c = out.clearance
    assert (c.cleared_on, c.days_to_clearance, c.censored, c.lasted_days, c.ongoing) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert c.days_observed == 30
    assert c.note is not None


def test_baseline_pasi_zero_makes_rebound_not_evaluable() -> None:
    course = TreatmentCourse("t", d(-10), d(10))
    out = run(timeline([(0, 0), (30, 50)]), treatments=[course])
    assert out.rebound is not None
    assert out.rebound.rebounded is None
    assert out.rebound.note is not None


# --------------------------------------------------------------------------- baseline choice


def test_flagged_baseline_later_than_earliest_leaves_earlier_ones_out_of_outcomes() -> None:
    assessments = [
        score(0, 50, aid="pre1"),  # would be PASI 75 and PASI <= 5 if it counted
        score(10, 300, aid="pre2"),
        score(20, 200, aid="base", baseline=True),
        score(30, 100, aid="post"),
    ]
    out = run(assessments)
    assert out.baseline.assessment_id == "base"
    assert out.anchor_on == d(20)
    assert [(p.assessment_id, p.days, p.counts) for p in out.series] == [
        ("pre1", -20, False),
        ("pre2", -10, False),
        ("base", 0, True),
        ("post", 10, True),
    ]
    assert [p.percent_improvement for p in out.series] == [
        None,
        None,
        Decimal("0.0"),
        Decimal("50.0"),
    ]
    assert out.responses["pasi50"] == TargetResponse(True, d(30), 10)
    assert out.responses["pasi75"] == TargetResponse(False, None, None)
    assert out.responses["pasi_le_5"] == TargetResponse(False, None, None)
    assert out.clearance.days_observed == 10


def test_unflagged_baseline_is_the_earliest_assessment() -> None:
    out = run([score(30, 100, aid="b"), score(0, 200, aid="a")])
    assert out.baseline.assessment_id == "a"
    assert out.latest.assessment_id == "b"


def test_treatment_anchor_uses_latest_assessment_on_or_before_start_and_counts_from_start() -> None:
    course = TreatmentCourse("t1", started_on=d(32))
    assessments = [
        score(0, 150, aid="flagged", baseline=True),  # flag ignored when anchored
        score(20, 120, aid="screen"),
        score(30, 100, aid="pre"),
        score(60, 50, aid="w4"),
        score(90, 20, aid="w8"),
    ]
    out = run(assessments, OutcomeOptions(treatment=course))
    assert out.anchor == "treatment"
    assert out.anchor_on == d(32)
    assert out.treatment_id == "t1"
    assert out.baseline.assessment_id == "pre"
    assert [(p.days, p.counts) for p in out.series] == [
        (-32, False),
        (-12, False),
        (-2, True),
        (28, True),
        (58, True),
    ]
    assert out.responses["pasi50"] == TargetResponse(True, d(60), 28)
    assert out.responses["pasi75"] == TargetResponse(True, d(90), 58)
    assert out.relapse.evaluable_from == d(60)
    assert out.relapse.relapse_free_days == 30
    assert out.clearance.days_observed == 58
    assert out.rebound is None  # the course has not ended


def test_treatment_anchor_accepts_an_assessment_on_the_start_date() -> None:
    course = TreatmentCourse("t1", started_on=d(30))
    out = run(timeline([(0, 150), (30, 100), (60, 40)]), OutcomeOptions(treatment=course))
    assert out.baseline.assessed_on == d(30)
    assert out.series[1].days == 0


def test_treatment_anchor_without_an_earlier_assessment_is_an_input_error() -> None:
    course = TreatmentCourse("t1", started_on=d(-1))
    with pytest.raises(ScoringInputError) as caught:
        compute_outcomes(timeline([(0, 150)]), OutcomeOptions(treatment=course))
    assert caught.value.field == "treatment"
    assert caught.value.rule == "has no assessment on or before its start date to serve as baseline"


def test_same_date_assessments_are_ordered_by_recorded_at() -> None:
    morning = score(0, 200, aid="morning", minute=0)
    evening = score(0, 180, aid="evening", minute=600)
    later = score(10, 90, aid="later", minute=0)
    later_fix = score(10, 100, aid="later-fix", minute=5)
    out = run([later_fix, evening, later, morning])
    assert out.baseline.assessment_id == "morning"
    assert out.latest.assessment_id == "later-fix"
    assert [p.assessment_id for p in out.series] == ["morning", "evening", "later", "later-fix"]
    assert out.responses["pasi50"] == TargetResponse(True, d(10), 10)


# --------------------------------------------------------------------------- rebound


def rebound_timeline(rebound_day: int, rebound_pasi: int = 125) -> list[DatedScore]:
    # Treatment 0 -> 100; baseline 10.0, so rebound means PASI >= 12.5 (4x >= 5b).
    return timeline([(0, 100), (50, 20), (100, 20), (150, 124), (rebound_day, rebound_pasi)])


COURSE = TreatmentCourse("t1", started_on=d(0), ended_on=d(100))


def test_rebound_inside_the_90_day_window() -> None:
    out = run(rebound_timeline(190), OutcomeOptions(treatment=COURSE))
    assert out.rebound == Rebound("t1", d(100), 90, True, d(190), 90)


def test_rebound_outside_the_90_day_window_does_not_count() -> None:
    out = run(rebound_timeline(191), OutcomeOptions(treatment=COURSE))
    assert out.rebound == Rebound("t1", d(100), 90, False, None, None)


def test_rebound_just_below_125_percent_does_not_count() -> None:
    out = run(rebound_timeline(190, 124), OutcomeOptions(treatment=COURSE))
    assert out.rebound is not None
    assert out.rebound.rebounded is False


def test_rebound_with_the_ema_60_day_window() -> None:
    options = OutcomeOptions(treatment=COURSE, rebound_window_days=60)
    out = run(rebound_timeline(160), options)
    assert out.rebound == Rebound("t1", d(100), 60, True, d(160), 60)
    out = run(rebound_timeline(190), options)
    assert out.rebound == Rebound("t1", d(100), 60, False, None, None)


def test_rebound_does_not_count_the_end_date_itself() -> None:
    assessments = timeline([(0, 100), (100, 200), (200, 20)])
    out = run(assessments, OutcomeOptions(treatment=COURSE))
    assert out.rebound == Rebound(
        "t1", d(100), 90, False, None, None, "no assessment within the 90 days after it ended"
    )


def test_rebound_uses_the_course_that_ended_last_when_not_anchored() -> None:
    courses = [
        TreatmentCourse("old", d(0), d(20)),
        TreatmentCourse("ongoing", d(105)),
        TreatmentCourse("recent", d(30), d(100)),
    ]
    out = run(rebound_timeline(190), treatments=courses)
    assert out.anchor == "baseline"
    assert out.rebound == Rebound("recent", d(100), 90, True, d(190), 90)


def test_no_rebound_section_without_an_ended_course() -> None:
    assert run(rebound_timeline(190)).rebound is None
    ongoing = TreatmentCourse("t1", d(0))
    assert run(rebound_timeline(190), treatments=[ongoing]).rebound is None
    # Anchored on an ongoing course: the other courses are not used.
    out = run(
        rebound_timeline(190),
        OutcomeOptions(treatment=ongoing),
        treatments=[TreatmentCourse("other", d(0), d(100))],
    )
    assert out.rebound is None


# --------------------------------------------------------------------------- validation, scale


def test_invalid_options_and_data_raise_outcome_input_errors() -> None:
    with pytest.raises(ScoringInputError) as caught:
        compute_outcomes(timeline([(0, 100)]), OutcomeOptions(rebound_window_days=0))
    assert caught.value.field == "rebound_window_days"
    with pytest.raises(ScoringInputError) as caught:
        compute_outcomes(
            timeline([(0, 100)]),
            OutcomeOptions(treatment=TreatmentCourse("t", d(10), d(5))),
        )
    assert caught.value.field == "treatment"
    with pytest.raises(ScoringInputError) as caught:
        compute_outcomes(timeline([(0, 721)]))
    assert caught.value.field == "pasi_tenths"
    with pytest.raises(ScoringInputError) as caught:
        compute_outcomes([score(0, 100, iga=5)])
    assert caught.value.field == "iga"
    assert isinstance(caught.value, ValueError)


def test_ten_thousand_assessments_compute() -> None:
    rng = random.Random(10_000)
    assessments = [score(i, rng.randint(0, 720), minute=i % 7) for i in range(10_000)]
    rng.shuffle(assessments)
    out = run(assessments)
    assert len(out.series) == 10_000
    assert out.series[0].days == 0
    assert out.clearance.days_observed == 9_999
