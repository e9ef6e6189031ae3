"""Hypothesis properties of app.scoring.outcomes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from app.scoring.outcomes import (
    ClearanceCriterion,
    DatedScore,
    OutcomeOptions,
    Outcomes,
    RelapseDefinition,
    compute_outcomes,
    percent_improvement,
)

START = date(2015, 1, 1)
pasi_values = st.integers(min_value=0, max_value=720)
iga_values = st.one_of(st.none(), st.integers(min_value=0, max_value=4))
criteria = st.sampled_from(list(ClearanceCriterion))
definitions = st.sampled_from(list(RelapseDefinition))
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


@st.composite
def timelines(draw: st.DrawFn, min_size: int = 1, max_size: int = 25) -> list[DatedScore]:
    """Assessments in order, gaps of 0-60 days (several on one date allowed)."""
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    # Bias towards a positive baseline, which is where the relative outcomes live.
    values = [draw(st.integers(min_value=1, max_value=720) | pasi_values)]
    values += [draw(pasi_values) for _ in range(n - 1)]
    out: list[DatedScore] = []
    day = 0
    for i, pasi in enumerate(values):
        if i:
            day += draw(st.integers(min_value=0, max_value=60))
        on = START + timedelta(days=day)
        out.append(
            DatedScore(
                assessment_id=f"a{i}",
                assessed_on=on,
                recorded_at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
                pasi_tenths=pasi,
                iga=draw(iga_values),
            )
        )
    return out


@st.composite
def option_sets(draw: st.DrawFn) -> OutcomeOptions:
    definition = draw(definitions)
    threshold = (
        draw(st.integers(min_value=0, max_value=720))
        if definition is RelapseDefinition.PASI_ABOVE
        else None
    )
    return OutcomeOptions(
        clearance=draw(criteria), relapse=definition, relapse_threshold_tenths=threshold
    )


def outcomes(assessments: list[DatedScore], options: OutcomeOptions) -> Outcomes:
    result = compute_outcomes(assessments, options)
    assert result is not None
    return result


@PROPERTY_SETTINGS
@given(timelines(), option_sets())
def test_percent_improvement_of_the_baseline_itself_is_zero(
    assessments: list[DatedScore], options: OutcomeOptions
) -> None:
    out = outcomes(assessments, options)
    baseline_point = out.series[0]
    assert baseline_point.days == 0
    assert baseline_point.counts
    if out.baseline.pasi_tenths > 0:
        assert baseline_point.percent_improvement == Decimal("0.0")
    else:
        assert baseline_point.percent_improvement is None


@PROPERTY_SETTINGS
@given(pasi_values, pasi_values)
def test_percent_improvement_equals_exact_value_rounded_half_up(b: int, x: int) -> None:
    shown = percent_improvement(b, x)
    if b == 0:
        assert shown is None
        return
    exact = Fraction(100 * (b - x), b)
    expected = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
        Decimal("0.1"), rounding=ROUND_HALF_UP
    )
    assert shown == expected
    assert shown is not None
    assert shown.as_tuple().exponent == -1


def _on_or_before(earlier: date | None, later: date | None) -> bool:
    if later is None:
        return True
    return earlier is not None and earlier <= later


@PROPERTY_SETTINGS
@given(timelines(), option_sets())
def test_stricter_responses_are_never_reached_before_looser_ones(
    assessments: list[DatedScore], options: OutcomeOptions
) -> None:
    r = outcomes(assessments, options).responses
    first = {key: value.first_reached_on for key, value in r.items()}
    assert _on_or_before(first["pasi50"], first["pasi75"])
    assert _on_or_before(first["pasi75"], first["pasi90"])
    assert _on_or_before(first["pasi90"], first["pasi100"])
    assert _on_or_before(first["pasi_le_5"], first["pasi_le_3"])
    assert _on_or_before(first["pasi_le_3"], first["pasi_le_2"])
    assert _on_or_before(first["pasi_le_2"], first["pasi_le_1"])


@PROPERTY_SETTINGS
@given(
    timelines(),
    option_sets(),
    pasi_values,
    iga_values,
    st.integers(min_value=0, max_value=400),
)
def test_a_later_assessment_never_changes_an_earlier_first_reached_or_cleared_date(
    assessments: list[DatedScore],
    options: OutcomeOptions,
    pasi: int,
    iga: int | None,
    gap: int,
) -> None:
    before = outcomes(assessments, options)
    last = assessments[-1]
    extra = DatedScore(
        assessment_id="extra",
        assessed_on=last.assessed_on + timedelta(days=gap),
        recorded_at=last.recorded_at + timedelta(seconds=1),
        pasi_tenths=pasi,
        iga=iga,
    )
    after = outcomes([*assessments, extra], options)
    assert after.baseline == before.baseline
    assert after.latest.assessment_id == "extra"
    for key, response in before.responses.items():
        if response.first_reached_on is not None:
            assert after.responses[key].first_reached_on == response.first_reached_on
            assert after.responses[key].days == response.days
    if before.clearance.cleared_on is not None:
        assert after.clearance.cleared_on == before.clearance.cleared_on
        assert after.clearance.days_to_clearance == before.clearance.days_to_clearance
    if before.relapse.relapsed_on is not None:
        assert after.relapse == before.relapse


@PROPERTY_SETTINGS
@given(timelines(), option_sets())
def test_relapse_is_never_reported_without_a_pasi50_response(
    assessments: list[DatedScore], options: OutcomeOptions
) -> None:
    out = outcomes(assessments, options)
    if out.responses["pasi50"].first_reached_on is None:
        assert out.relapse.relapsed_on is None
        assert out.relapse.evaluable_from is None
        assert out.relapse.censored is None
        assert out.relapse.note is not None
        assert out.episodes == []


@PROPERTY_SETTINGS
@given(timelines(), option_sets())
def test_relapse_durations_are_never_negative_and_consistent(
    assessments: list[DatedScore], options: OutcomeOptions
) -> None:
    out = outcomes(assessments, options)
    relapse = out.relapse
    if relapse.relapse_free_days is not None:
        assert relapse.relapse_free_days >= 0
    if relapse.days_to_relapse is not None:
        assert relapse.days_to_relapse >= 0
        assert relapse.relapse_free_days == relapse.days_to_relapse
        assert relapse.censored is False
    if relapse.evaluable_from is not None and relapse.relapsed_on is None:
        assert relapse.censored is True
    for earlier, later in zip(out.episodes, out.episodes[1:], strict=False):
        assert earlier.relapsed_on is not None
        assert earlier.relapsed_on <= later.responded_on
    for episode in out.episodes:
        assert episode.responded_on <= episode.best_on
        if episode.relapsed_on is not None:
            assert episode.best_on <= episode.relapsed_on


def _reference_first_relapse(
    assessments: list[DatedScore], options: OutcomeOptions
) -> tuple[date | None, date | None]:
    """Quadratic, literal reading of SPEC section 3 for the first episode."""
    b = assessments[0].pasi_tenths
    if b == 0:
        return None, None
    k = 75 if options.relapse is RelapseDefinition.LOSS_OF_PASI75 else 50
    start = next((i for i, a in enumerate(assessments) if 100 * (b - a.pasi_tenths) >= k * b), None)
    if start is None:
        return None, None
    tests: dict[RelapseDefinition, Callable[[int, int], bool]] = {
        RelapseDefinition.NPF_50PCT_LOSS: lambda x, best: (
            Fraction(x) >= best + Fraction(b - best, 2)
        ),
        RelapseDefinition.EMA_50PCT_LOSS: lambda x, best: (
            Fraction(x) > best + Fraction(b - best, 2)
        ),
        RelapseDefinition.LOSS_OF_PASI75: lambda x, best: Fraction(100 * (b - x), b) < 75,
        RelapseDefinition.PASI_ABOVE: lambda x, best: x > (options.relapse_threshold_tenths or 0),
    }
    relapses = tests[options.relapse]
    for j in range(start + 1, len(assessments)):
        best = min(a.pasi_tenths for a in assessments[:j])
        if relapses(assessments[j].pasi_tenths, best):
            return assessments[start].assessed_on, assessments[j].assessed_on
    return assessments[start].assessed_on, None


@PROPERTY_SETTINGS
@given(timelines(), option_sets())
def test_first_relapse_matches_a_literal_quadratic_reading_of_the_spec(
    assessments: list[DatedScore], options: OutcomeOptions
) -> None:
    out = outcomes(assessments, options)
    evaluable_from, relapsed_on = _reference_first_relapse(assessments, options)
    assert out.relapse.evaluable_from == evaluable_from
    assert out.relapse.relapsed_on == relapsed_on


@PROPERTY_SETTINGS
@given(timelines())
def test_each_response_is_first_reached_where_a_literal_reading_of_the_spec_says(
    scores: list[DatedScore],
) -> None:
    """Independent reference: scan the counting assessments for the first that meets each
    target as SPEC 3 words it (percent improvement >= k, as an exact fraction; PASI <= limit)."""
    result = compute_outcomes(scores)
    assert result is not None
    ordered = sorted(scores, key=lambda s: (s.assessed_on, s.recorded_at))
    baseline = next((i for i, s in enumerate(ordered) if s.is_baseline), 0)
    counting = ordered[baseline:]
    b = Fraction(counting[0].pasi_tenths, 10)
    tests: dict[str, Callable[[Fraction], bool]] = {
        f"pasi{k}": (lambda x, k=k: b > 0 and (b - x) / b * 100 >= k) for k in (50, 75, 90, 100)
    }
    for limit in (1, 2, 3, 5):
        tests[f"pasi_le_{limit}"] = lambda x, limit=limit: x <= limit
    for key, meets in tests.items():
        first = next((s for s in counting if meets(Fraction(s.pasi_tenths, 10))), None)
        response = result.responses[key]
        if key.startswith("pasi") and key[4:].isdigit() and b == 0:
            assert response.reached_now is None
            continue
        assert response.first_reached_on == (first.assessed_on if first else None), key
        assert response.reached_now == meets(Fraction(counting[-1].pasi_tenths, 10)), key
