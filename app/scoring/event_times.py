"""One patient's time to event, computed alone (SPEC section 8 over section 3).

A cohort's Kaplan–Meier estimate needs one figure per patient, not the whole outcomes:
``event_observation`` gives exactly ``event_time(compute_outcomes(...), event)`` while
building no series, responses or episodes (a property test holds the two paths equal for
every event and option). Pure, standard library only.

Input
    ``EventScore`` is ``(day, pasi_tenths, iga, is_baseline)``: ``day`` is the assessment's
    ``assessed_on.toordinal()``. Scores are given already in outcomes order (``assessed_on``,
    then ``recorded_at``, stable) and already valid (``is_valid_score``): the cohort reader
    orders them without decoding every ``recorded_at`` and sends a patient with an invalid
    score down the full path, whose error names the assessment.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.scoring.cohort import CohortEvent, Observation
from app.scoring.errors import ScoringInputError
from app.scoring.instruments import IGA_MAX
from app.scoring.outcomes import OutcomeOptions, TreatmentCourse, _validate_options
from app.scoring.pasi import PASI_MAX_TENTHS
from app.scoring.relapse import relapse_rule
from app.scoring.response import RELATIVE_TARGETS, clearance_test

__all__ = ["EventScore", "event_observation", "is_valid_score"]

EventScore = tuple[int, int, int | None, bool]
"""``(assessed_on.toordinal(), pasi_tenths, iga, is_baseline)`` of one assessment."""

_RESPONSE_K = dict(RELATIVE_TARGETS)
# compute_outcomes' wording, which the cohort answer repeats.
NO_BASELINE_FOR_TREATMENT = "has no assessment on or before its start date to serve as baseline"


def is_valid_score(pasi_tenths: int, iga: int | None) -> bool:
    """Whether ``compute_outcomes`` accepts these values (else it raises for them)."""
    return 0 <= pasi_tenths <= PASI_MAX_TENTHS and (iga is None or 0 <= iga <= IGA_MAX)


def _baseline_index(ordered: Sequence[EventScore], options: OutcomeOptions) -> int:
    if options.treatment is not None:
        start = options.treatment.started_on.toordinal()
        index = -1
        for i, score in enumerate(ordered):
            if score[0] > start:
                break
            index = i
        if index < 0:
            raise ScoringInputError("treatment", NO_BASELINE_FOR_TREATMENT)
        return index
    return next((i for i, score in enumerate(ordered) if score[3]), 0)


def event_observation(
    ordered: Sequence[EventScore],
    event: CohortEvent,
    options: OutcomeOptions = OutcomeOptions(),
    treatments: Sequence[TreatmentCourse] = (),
) -> Observation | None:
    """``event_time(compute_outcomes(scores, options, treatments), event)``, or None where
    that is None (no scores, or the patient does not enter); raises the same
    ``ScoringInputError`` for unusable options or an anchor without a baseline."""
    _validate_options(options, treatments)
    if not ordered:
        return None
    first = _baseline_index(ordered, options)
    b = ordered[first][1]
    anchor = (
        options.treatment.started_on.toordinal()
        if options.treatment is not None
        else ordered[first][0]
    )
    observed = ordered[-1][0] - anchor  # days_observed: anchor to latest

    if event is CohortEvent.CLEARANCE:
        clears = clearance_test(options.clearance, b)
        if clears is None:
            return None
        for i in range(first, len(ordered)):
            day, pasi, iga, _ = ordered[i]
            if clears(pasi, iga) is True:
                return Observation(day - anchor, True)
        return Observation(observed, False)

    if b == 0:  # relapse and relative responses are undefined
        return None

    if event is CohortEvent.RELAPSE:
        rule = relapse_rule(options.relapse, b, options.relapse_threshold_tenths)
        n = len(ordered)
        i = first
        while i < n and not rule.qualifies(ordered[i][1]):
            i += 1
        if i == n:
            return None  # no qualifying response: not evaluable
        responded = ordered[i][0]
        best = ordered[i][1]
        for j in range(i + 1, n):
            day, pasi = ordered[j][0], ordered[j][1]
            if rule.relapses(pasi, best):
                return Observation(day - responded, True)
            if pasi < best:
                best = pasi
        return Observation(ordered[-1][0] - responded, False)

    limit = (100 - _RESPONSE_K[event.value]) * b // 100
    for i in range(first, len(ordered)):
        if ordered[i][1] <= limit:
            return Observation(ordered[i][0] - anchor, True)
    return Observation(observed, False)
