"""The lean time-to-event path (`event_observation`) equals `event_time` of the full outcomes
on random patient courses, for every event and every option a cohort estimate accepts,
errors included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from operator import attrgetter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.scoring.cohort import CohortEvent, Observation, event_time
from app.scoring.errors import ScoringInputError
from app.scoring.event_times import EventScore, event_observation, is_valid_score
from app.scoring.outcomes import (
    ClearanceCriterion,
    DatedScore,
    OutcomeOptions,
    RelapseDefinition,
    TreatmentCourse,
    compute_outcomes,
)

START = date(2015, 1, 1)
RECORDED = datetime(2030, 1, 1, tzinfo=UTC)


@st.composite
def courses(draw: st.DrawFn) -> list[DatedScore]:
    """0-25 valid assessments in random input order: several on one date, recorded in any
    order (ties included), baseline flags anywhere, low PASI values often (events happen)."""
    n = draw(st.integers(min_value=0, max_value=25))
    pasi = st.integers(min_value=0, max_value=720) | st.sampled_from([0, 1, 5, 10, 20, 50, 100])
    scores = []
    for i in range(n):
        scores.append(
            DatedScore(
                assessment_id=f"a{i}",
                assessed_on=START + timedelta(days=draw(st.integers(0, 400))),
                recorded_at=RECORDED + timedelta(seconds=draw(st.integers(0, 5))),
                pasi_tenths=draw(pasi),
                iga=draw(st.none() | st.integers(0, 4)),
                is_baseline=draw(st.booleans()) and draw(st.booleans()),
            )
        )
    return scores


def course_of(draw: st.DrawFn) -> TreatmentCourse:
    started = START + timedelta(days=draw(st.integers(-30, 430)))
    ended = draw(st.none() | st.integers(-10, 300))  # negative: ends before it starts
    return TreatmentCourse(
        treatment_id=f"t{draw(st.integers(0, 9))}",
        started_on=started,
        ended_on=None if ended is None else started + timedelta(days=ended),
    )


@st.composite
def option_sets(draw: st.DrawFn) -> tuple[OutcomeOptions, list[TreatmentCourse]]:
    """Every option the endpoint passes on, some unusable (to compare the errors)."""
    definition = draw(st.sampled_from(list(RelapseDefinition)))
    threshold = draw(st.none() | st.integers(-5, 720))
    options = OutcomeOptions(
        clearance=draw(st.sampled_from(list(ClearanceCriterion))),
        relapse=definition,
        relapse_threshold_tenths=threshold,
        treatment=None if draw(st.booleans()) else course_of(draw),
        rebound_window_days=draw(st.sampled_from([90, 60, 1, 0])),
    )
    treatments = [course_of(draw) for _ in range(draw(st.integers(0, 2)))]
    return options, treatments


def full_path(
    scores: list[DatedScore],
    event: CohortEvent,
    options: OutcomeOptions,
    treatments: list[TreatmentCourse],
) -> Observation | tuple[str, str] | None:
    try:
        outcomes = compute_outcomes(scores, options, treatments)
    except ScoringInputError as exc:
        return (exc.field, exc.rule)
    return None if outcomes is None else event_time(outcomes, event)


def lean_path(
    scores: list[DatedScore],
    event: CohortEvent,
    options: OutcomeOptions,
    treatments: list[TreatmentCourse],
) -> Observation | tuple[str, str] | None:
    ordered = sorted(scores, key=attrgetter("assessed_on", "recorded_at"))
    lean: list[EventScore] = [
        (s.assessed_on.toordinal(), s.pasi_tenths, s.iga, s.is_baseline) for s in ordered
    ]
    try:
        return event_observation(lean, event, options, treatments)
    except ScoringInputError as exc:
        return (exc.field, exc.rule)


@settings(max_examples=1500, deadline=None)
@given(courses(), st.sampled_from(list(CohortEvent)), option_sets())
def test_event_observation_equals_event_time_of_the_full_outcomes(
    scores: list[DatedScore],
    event: CohortEvent,
    options_and_treatments: tuple[OutcomeOptions, list[TreatmentCourse]],
) -> None:
    options, treatments = options_and_treatments
    assert lean_path(scores, event, options, treatments) == full_path(
        scores, event, options, treatments
    )


@settings(max_examples=300, deadline=None)
@given(st.integers(-50, 800), st.none() | st.integers(-3, 8))
def test_is_valid_score_is_what_compute_outcomes_accepts(pasi: int, iga: int | None) -> None:
    score = DatedScore("a", START, RECORDED, pasi, iga=iga)
    try:
        compute_outcomes([score])
        accepted = True
    except ScoringInputError:
        accepted = False
    assert is_valid_score(pasi, iga) is accepted


@pytest.mark.parametrize("event", list(CohortEvent))
def test_no_scores_is_none_but_unusable_options_still_raise(event: CohortEvent) -> None:
    assert event_observation([], event) is None
    with pytest.raises(ScoringInputError) as raised:
        event_observation([], event, OutcomeOptions(relapse=RelapseDefinition.PASI_ABOVE))
    assert raised.value.field == "relapse_threshold"
