"""Cohort statistics (app.scoring.cohort, SPEC section 8): Wilson intervals, time-to-event
extraction, Kaplan–Meier against lifelines, and hand-worked response rates per visit."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times

from app.scoring.cohort import (
    KM_METHOD,
    CohortEvent,
    Imputation,
    KaplanMeier,
    Observation,
    TargetRate,
    VisitRates,
    event_time,
    kaplan_meier,
    response_rates,
    wilson_interval,
)
from app.scoring.errors import ScoringInputError
from app.scoring.outcomes import (
    ClearanceCriterion,
    DatedScore,
    OutcomeOptions,
    Outcomes,
    TreatmentCourse,
    compute_outcomes,
)

DAY0 = date(2021, 3, 1)
TOLERANCE = 1e-9


def d(days: int) -> date:
    return DAY0 + timedelta(days=days)


def score(
    day: int, pasi: int, visit: str | None = None, *, baseline: bool = False, minute: int = 0
) -> DatedScore:
    on = d(day)
    return DatedScore(
        assessment_id=f"a{day}-{minute}",
        assessed_on=on,
        recorded_at=datetime(on.year, on.month, on.day, 9, tzinfo=UTC) + timedelta(minutes=minute),
        pasi_tenths=pasi,
        is_baseline=baseline,
        visit=visit,
    )


def outcomes(assessments: Sequence[DatedScore], options: OutcomeOptions | None = None) -> Outcomes:
    result = compute_outcomes(assessments, options or OutcomeOptions())
    assert result is not None
    return result


# --------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("successes", "n", "lower", "upper"),
    [
        # Newcombe RG. Two-sided confidence intervals for the single proportion: comparison of
        # seven methods. Statistics in Medicine 1998;17:857-872, table II, method 3 (score
        # interval without continuity correction), examples (a)-(d), to 4 decimals.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_1998_method_3_examples(
    successes: int, n: int, lower: float, upper: float
) -> None:
    got_lower, got_upper = wilson_interval(successes, n)
    assert round(got_lower, 4) == lower
    assert round(got_upper, 4) == upper


def test_wilson_ends_are_exact_at_zero_and_all_successes_and_symmetric() -> None:
    assert wilson_interval(0, 20)[0] == 0.0
    assert wilson_interval(20, 20)[1] == 1.0
    for successes, n in [(0, 20), (1, 29), (15, 148), (81, 263), (7, 7)]:
        lower, upper = wilson_interval(successes, n)
        mirror_lower, mirror_upper = wilson_interval(n - successes, n)
        assert lower == pytest.approx(1 - mirror_upper, abs=1e-15)
        assert upper == pytest.approx(1 - mirror_lower, abs=1e-15)


@pytest.mark.parametrize(("successes", "n"), [(0, 0), (1, 0), (-1, 5), (6, 5)])
def test_wilson_refuses_an_empty_denominator_or_impossible_counts(successes: int, n: int) -> None:
    with pytest.raises(ValueError, match=r"Wilson|successes"):
        wilson_interval(successes, n)


# --------------------------------------------------------------------------- event_time


def test_clearance_event_is_the_day_of_first_clearance() -> None:
    patient = outcomes([score(0, 120), score(28, 30), score(56, 0), score(84, 10)])
    assert event_time(patient, CohortEvent.CLEARANCE) == Observation(56, True)


def test_clearance_not_reached_is_censored_at_days_observed() -> None:
    patient = outcomes([score(0, 120), score(28, 30), score(84, 10)])
    assert event_time(patient, CohortEvent.CLEARANCE) == Observation(84, False)


def test_clear_baseline_is_a_day_0_clearance_event() -> None:
    patient = outcomes([score(0, 0), score(30, 0)])
    assert event_time(patient, CohortEvent.CLEARANCE) == Observation(0, True)


def test_clearance_not_evaluable_keeps_the_patient_out() -> None:
    # PASI 90 is relative, so with a baseline PASI of 0 clearance is not evaluable.
    patient = outcomes([score(0, 0), score(30, 0)], OutcomeOptions(ClearanceCriterion.PASI90))
    assert patient.clearance.censored is None
    assert event_time(patient, CohortEvent.CLEARANCE) is None


def test_treatment_anchored_days_are_passed_through_unclamped() -> None:
    # The baseline (PASI 0) is 5 days before the treatment starts: cleared on day -5.
    course = TreatmentCourse("t1", started_on=d(5))
    patient = outcomes([score(0, 0), score(40, 0)], OutcomeOptions(treatment=course))
    assert event_time(patient, CohortEvent.CLEARANCE) == Observation(-5, True)


def test_relapse_event_counts_from_evaluable_from() -> None:
    # Baseline 20.0; PASI 50 first on day 28 (8.0, best); NPF relapse when 2*x >= 8.0 + 20.0,
    # i.e. x >= 14.0: day 70 (14.0). 70 - 28 = 42 days.
    patient = outcomes([score(0, 200), score(28, 80), score(56, 100), score(70, 140)])
    assert event_time(patient, CohortEvent.RELAPSE) == Observation(42, True)


def test_relapse_free_patient_is_censored_at_relapse_free_days() -> None:
    patient = outcomes([score(0, 200), score(28, 80), score(84, 60)])
    assert event_time(patient, CohortEvent.RELAPSE) == Observation(56, False)


def test_relapse_without_a_qualifying_response_keeps_the_patient_out() -> None:
    patient = outcomes([score(0, 200), score(28, 150), score(84, 120)])
    assert patient.relapse.evaluable_from is None
    assert event_time(patient, CohortEvent.RELAPSE) is None


def test_pasi_responses_are_events_on_first_reach_or_censored_at_follow_up() -> None:
    # Baseline 20.0: day 28 at 9.0 (55 %: PASI 50), day 56 at 4.0 (80 %: PASI 75), then 6.0.
    patient = outcomes([score(0, 200), score(28, 90), score(56, 40), score(91, 60)])
    assert event_time(patient, CohortEvent.PASI50) == Observation(28, True)
    assert event_time(patient, CohortEvent.PASI75) == Observation(56, True)
    # PASI 90 never reached: censored at the follow-up so far (day 91).
    assert event_time(patient, CohortEvent.PASI90) == Observation(91, False)


def test_undefined_pasi_response_keeps_the_patient_out() -> None:
    patient = outcomes([score(0, 0), score(28, 10)])
    for event in (CohortEvent.PASI50, CohortEvent.PASI75, CohortEvent.PASI90):
        assert event_time(patient, event) is None


# --------------------------------------------------------------------------- Kaplan–Meier


def _finite_or_none(value: float) -> int | None:
    return None if math.isinf(value) else int(value)


def _exact_median(observations: Sequence[Observation]) -> tuple[int | None, bool]:
    """(first day with exact S <= 1/2, whether exact S == 1/2 at some event day)."""
    survival = Fraction(1)
    at_risk = len(observations)
    median: int | None = None
    tie = False
    for day in sorted({o.days for o in observations}):
        events = sum(1 for o in observations if o.days == day and o.event)
        leaving = sum(1 for o in observations if o.days == day)
        if events:
            survival *= Fraction(at_risk - events, at_risk)
            tie = tie or survival == Fraction(1, 2)
            if median is None and survival <= Fraction(1, 2):
                median = day
        at_risk -= leaving
    return median, tie


def assert_matches_lifelines(observations: Sequence[Observation]) -> KaplanMeier:
    """Every step, the median and its interval equal lifelines' to 1e-9 (SPEC section 8).

    The only permitted difference is the documented one: at an exact S == 0.5 the median is
    decided exactly, where lifelines' floating point may land on 0.5000000000000001.
    """
    km = kaplan_meier(observations)
    fitter = KaplanMeierFitter().fit(
        [o.days for o in observations], [o.event for o in observations]
    )
    survival = fitter.survival_function_.iloc[:, 0]
    interval = fitter.confidence_interval_
    table = fitter.event_table

    assert km.n == len(observations)
    assert km.events == sum(o.event for o in observations)
    assert km.censored == km.n - km.events
    assert km.method == KM_METHOD
    step_days = [step.day for step in km.steps]
    assert step_days == sorted({o.days for o in observations})
    for step in km.steps:
        t = float(step.day)
        assert step.at_risk == table.loc[t, "at_risk"]
        assert step.events == table.loc[t, "observed"]
        assert step.censored == table.loc[t, "censored"]
        assert step.survival == pytest.approx(survival.loc[t], abs=TOLERANCE, rel=0)
        assert step.ci_lower == pytest.approx(interval.loc[t].iloc[0], abs=TOLERANCE, rel=0)
        assert step.ci_upper == pytest.approx(interval.loc[t].iloc[1], abs=TOLERANCE, rel=0)
    # lifelines' only other row is its origin (day 0 when every day is later): S = CI = 1.
    for t in set(survival.index) - {float(day) for day in step_days}:
        assert t == 0.0
        assert survival.loc[t] == interval.loc[t].iloc[0] == interval.loc[t].iloc[1] == 1.0

    exact_median, exact_tie = _exact_median(observations)
    assert km.median_days == exact_median
    if not exact_tie:
        assert km.median_days == _finite_or_none(fitter.median_survival_time_)
    median_ci = median_survival_times(interval)
    assert km.median_ci == (
        _finite_or_none(median_ci.iloc[0, 0]),
        _finite_or_none(median_ci.iloc[0, 1]),
    )
    return km


def _cohort(
    seed: int, n: int, max_day: int, event_share: float, min_day: int = 1
) -> list[Observation]:
    rng = random.Random(seed)
    return [
        Observation(rng.randint(min_day, max_day), rng.random() < event_share) for _ in range(n)
    ]


def test_km_matches_lifelines_with_many_ties() -> None:
    # 300 patients over 12 distinct days: every day carries tied events and censorings.
    observations = _cohort(seed=11, n=300, max_day=12, event_share=0.6)
    km = assert_matches_lifelines(observations)
    assert len(km.steps) == 12
    assert all(step.events > 1 and step.censored > 0 for step in km.steps[:-1])
    assert km.median_days is not None


def test_km_matches_lifelines_with_heavy_censoring() -> None:
    # 85 % censored, over a year of follow-up: the tail has few patients at risk.
    observations = _cohort(seed=23, n=400, max_day=365, event_share=0.15)
    km = assert_matches_lifelines(observations)
    assert km.censored > 5 * km.events


def test_km_matches_lifelines_with_a_median_not_reached() -> None:
    # 20 % events over half a year, then 60 patients censored event-free at day 365.
    observations = _cohort(seed=5, n=120, max_day=180, event_share=0.2)
    observations += [Observation(365, False)] * 60
    km = assert_matches_lifelines(observations)
    assert km.median_days is None
    assert km.median_ci[1] is None
    assert km.steps[-1].survival > 0.5


def test_km_matches_lifelines_with_day_0_events() -> None:
    # Baselines that already meet the target reach it on day 0, some censored on day 0 too.
    observations = [Observation(0, True)] * 7 + [Observation(0, False)] * 2
    observations += _cohort(seed=3, n=60, max_day=90, event_share=0.5)
    km = assert_matches_lifelines(observations)
    first = km.steps[0]
    assert (first.day, first.at_risk, first.events, first.censored) == (0, 69, 7, 2)
    assert first.survival == pytest.approx(62 / 69, abs=1e-15)


def test_km_survival_falls_to_zero_when_the_last_at_risk_has_the_event() -> None:
    observations = [Observation(5, True), Observation(10, False), Observation(12, True)]
    km = assert_matches_lifelines(observations)
    last = km.steps[-1]
    assert (last.at_risk, last.events, last.survival, last.ci_lower, last.ci_upper) == (
        1,
        1,
        0.0,
        0.0,
        0.0,
    )
    # S = 2/3 after day 5 (kept until day 12), 0 after day 12.
    assert km.median_days == 12


def test_km_before_any_event_has_survival_and_interval_of_one() -> None:
    observations = [Observation(3, False), Observation(4, False), Observation(9, True)]
    km = assert_matches_lifelines(observations)
    assert [(s.survival, s.ci_lower, s.ci_upper) for s in km.steps[:2]] == [(1.0, 1.0, 1.0)] * 2


def test_km_median_at_an_exact_half_is_decided_exactly_unlike_lifelines_float() -> None:
    # Six patients, events on days 1..6: S(3) = 5/6 * 4/5 * 3/4 = 1/2 exactly, so the median
    # (first day with S <= 0.5) is day 3. lifelines computes exp(sum(log)) = 0.5000000000000001
    # and reports day 4: the one documented difference.
    observations = [Observation(day, True) for day in range(1, 7)]
    km = assert_matches_lifelines(observations)
    assert km.median_days == 3
    fitter = KaplanMeierFitter().fit([o.days for o in observations])
    assert fitter.median_survival_time_ == 4.0


def test_km_spec_example_step() -> None:
    # SPEC section 8's example step: day 7, 900 at risk, 12 events: survival 888/900 = 0.98667
    # and upper bound 0.9924. The log(-log) lower bound is 0.97664 (lifelines agrees); the
    # SPEC's 0.9772 is not what this method gives.
    observations = [Observation(7, True)] * 12 + [Observation(120, False)] * 888
    km = assert_matches_lifelines(observations)
    step = km.steps[0]
    assert (step.day, step.at_risk, step.events, step.censored) == (7, 900, 12, 0)
    assert round(step.survival, 5) == 0.98667
    assert round(step.ci_upper, 4) == 0.9924
    assert round(step.ci_lower, 5) == 0.97664


def test_km_of_an_empty_cohort_has_no_steps_and_no_median() -> None:
    assert kaplan_meier([]) == KaplanMeier(0, 0, 0, None, (None, None), ())


observation_lists = st.lists(
    st.builds(Observation, st.integers(min_value=0, max_value=40), st.booleans()),
    min_size=1,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(observation_lists)
def test_km_matches_lifelines_on_random_cohorts(observations: list[Observation]) -> None:
    assert_matches_lifelines(observations)


# --------------------------------------------------------------------------- response rates

TARGETS = ["pasi50", "pasi75", "pasi90", "pasi_le_1"]


def hand_cohort() -> list[Outcomes | None]:
    """Four assessed patients and one with no assessment (PASI in tenths).

    P1: screening (pre-baseline, never counts) then wk0 20.0, wk4 9.0 (55 %), wk12 2.0 (90 %).
    P2: wk0 10.0, wk4 2.5 (75 %), no wk12, an unlabelled day-60 0.5 (95 %).
    P3: wk0 0.0 (relative responses undefined), wk12 0.0.
    P4: wk0 15.0, wk4 15.0 on day 26 and again 3.0 (80 %) on day 32, wk12 7.5 (50 %) on day 90.
    P5: no assessment.
    """
    p1 = [
        score(-14, 250, "screening"),
        score(0, 200, "wk0", baseline=True),
        score(28, 90, "wk4"),
        score(84, 20, "wk12"),
    ]
    p2 = [score(0, 100, "wk0"), score(30, 25, "wk4"), score(60, 5)]
    p3 = [score(0, 0, "wk0"), score(84, 0, "wk12")]
    p4 = [score(0, 150, "wk0"), score(26, 150, "wk4"), score(32, 30, "wk4"), score(90, 75, "wk12")]
    return [outcomes(p1), outcomes(p2), outcomes(p3), outcomes(p4), None]


def _responders(rates: Sequence[VisitRates]) -> list[tuple[str, float, int, int, list[int]]]:
    return [
        (v.visit, v.median_day, v.assessed, v.n, [r.responders for r in v.rates]) for v in rates
    ]


def test_visits_are_ordered_by_median_day_and_latest_label_wins() -> None:
    rates = response_rates(hand_cohort(), TARGETS, Imputation.OBSERVED)
    # "screening" is only before P1's baseline, so it is no visit. Median days: wk0 (0, 0, 0, 0)
    # -> 0; wk4 (28, 30, 32: P4's later wk4 wins over day 26) -> 30; wk12 (84, 84, 90) -> 84.
    assert [(v.visit, v.median_day) for v in rates] == [("wk0", 0), ("wk4", 30), ("wk12", 84)]
    assert all(v.imputation is Imputation.OBSERVED for v in rates)
    assert all([r.target for r in v.rates] == TARGETS for v in rates)


def test_observed_rates_count_patients_assessed_at_the_visit() -> None:
    rates = response_rates(hand_cohort(), TARGETS, Imputation.OBSERVED)
    # wk0: n 4; baselines are no relative responders; P3 (0.0) meets PASI <= 1.
    # wk4: n 3 (P1 9.0, P2 2.5, P4 3.0): PASI 50 all 3; PASI 75 P2 (exactly 75 %) and P4 (80 %);
    #      PASI 90 none; PASI <= 1 none.
    # wk12: n 3 (P1 2.0, P3 0.0, P4 7.5): PASI 50 P1 and P4 (exactly 50 %) but not P3 (baseline
    #      0: non-responder); PASI 75 P1; PASI 90 P1 (exactly 90 %); PASI <= 1 P3.
    assert _responders(rates) == [
        ("wk0", 0, 4, 4, [0, 0, 0, 1]),
        ("wk4", 30, 3, 3, [3, 2, 0, 0]),
        ("wk12", 84, 3, 3, [2, 1, 1, 1]),
    ]
    pasi75_wk4 = rates[1].rates[1]
    lower, upper = wilson_interval(2, 3)
    assert pasi75_wk4 == TargetRate("pasi75", 2, 2 / 3, lower, upper)


def test_nri_counts_every_cohort_patient_and_missing_visits_as_non_response() -> None:
    rates = response_rates(hand_cohort(), TARGETS, Imputation.NRI)
    # Same responders as observed; the denominator is all 5 patients (P5 and the patients
    # missing a visit are non-responders): PASI 50 at wk12 is 2/5.
    assert _responders(rates) == [
        ("wk0", 0, 4, 5, [0, 0, 0, 1]),
        ("wk4", 30, 3, 5, [3, 2, 0, 0]),
        ("wk12", 84, 3, 5, [2, 1, 1, 1]),
    ]
    pasi50_wk12 = rates[2].rates[0]
    assert pasi50_wk12.proportion == 0.4
    assert (pasi50_wk12.ci_lower, pasi50_wk12.ci_upper) == wilson_interval(2, 5)


def test_locf_carries_the_latest_assessment_to_the_visit_median_day() -> None:
    rates = response_rates(hand_cohort(), TARGETS, Imputation.LOCF)
    # n is the 4 assessed patients (P5 has nothing to carry).
    # wk4 (day 30): P3 carries its baseline 0.0: no relative response, PASI <= 1 met
    #      -> [3, 2, 0, 1].
    # wk12 (day 84): P2 carries its unlabelled day-60 0.5 (95 %): PASI 50, 75, 90 and <= 1
    #      -> PASI 50 P1, P2, P4; PASI 75 P1, P2; PASI 90 P1, P2; PASI <= 1 P2, P3
    #      -> [3, 2, 2, 2].
    assert _responders(rates) == [
        ("wk0", 0, 4, 4, [0, 0, 0, 1]),
        ("wk4", 30, 3, 4, [3, 2, 0, 1]),
        ("wk12", 84, 3, 4, [3, 2, 2, 2]),
    ]


def test_locf_uses_the_baseline_when_nothing_precedes_the_visit() -> None:
    # Anchored on a treatment starting on day 10. A's baseline (day 0, visit "pre") sits at
    # day -10; B's baseline is on the start day (day 0), PASI 0.5, unlabelled. Visit "pre" has
    # median day -10, before anything of B's, so B's baseline stands in: PASI <= 1 met.
    course = TreatmentCourse("t1", started_on=d(10))
    options = OutcomeOptions(treatment=course)
    a = outcomes([score(0, 100, "pre"), score(40, 40, "wk4")], options)
    b = outcomes([score(10, 5), score(40, 5, "wk4")], options)
    rates = response_rates([a, b], ["pasi50", "pasi_le_1"], Imputation.LOCF)
    assert _responders(rates) == [("pre", -10, 1, 2, [0, 1]), ("wk4", 30, 2, 2, [1, 1])]


def test_unknown_targets_are_refused_and_repeated_ones_reported_once() -> None:
    with pytest.raises(ScoringInputError) as caught:
        response_rates(hand_cohort(), ["pasi75", "pasi80"], Imputation.NRI)
    assert caught.value.field == "targets"
    rates = response_rates(hand_cohort(), ["pasi75", "pasi75"], Imputation.NRI)
    assert [r.target for r in rates[0].rates] == ["pasi75"]


def test_cohort_without_assessments_has_no_visits() -> None:
    assert response_rates([None, None], TARGETS, Imputation.NRI) == []
    assert response_rates([], TARGETS, Imputation.OBSERVED) == []
