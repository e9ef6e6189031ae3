"""Outcomes of a patient's serial assessments (SPEC section 3): pure, exact, O(n log n).

Everything here is a pure function of the assessments and the options: no I/O, no clock.

Units and exactness
    PASI is carried as an integer number of tenths everywhere (``186`` means 18.6), so every
    threshold is an exact integer comparison (SPEC section 2, "Exact arithmetic"):

    * PASI *k* response: ``b > 0 and 100 * (b - x) >= k * b``;
    * absolute targets PASI <= 1 / 2 / 3 / 5: ``x <= 10 / 20 / 30 / 50``;
    * percent improvement is only *displayed*: ``100 * (b - x) / b`` rounded to 0.1 with
      ``ROUND_HALF_UP`` (a ``Decimal``, negative when PASI worsened); nothing is ever
      compared after rounding.

    ``b`` is the baseline PASI and ``x`` the PASI of the assessment being judged.
    BSA is a ``Decimal`` percentage or ``None``.

Ordering
    Assessments are ordered by ``(assessed_on, recorded_at)``: two assessments on the same
    clinical date are ordered by the time they were recorded, so the one recorded later is
    "later" (and, if it is the last, the latest). Input order is irrelevant. ``recorded_at``
    values must be all timezone-aware or all naive, as Python requires to compare them.

Baseline and anchor
    The baseline is the assessment flagged ``is_baseline`` (the first in order if several
    are), else the earliest. When the options name a treatment, the baseline is instead the
    latest assessment on or before the treatment's start date (the flag is ignored) and
    days count from the start date. The baseline and every assessment after it "count";
    assessments before it appear in ``series`` (``counts=False``, days <= 0) and count
    towards nothing else. Days are always ``(assessed_on - anchor_on).days`` without
    clamping: an anchored baseline taken before the treatment started has negative days.

Complexity
    One sort, then a constant number of linear passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Literal

from app.scoring.errors import ScoringInputError
from app.scoring.instruments import IGA_MAX
from app.scoring.pasi import PASI_MAX_TENTHS
from app.scoring.relapse import (
    REBOUND_WINDOW_DAYS_NPF,
    Episode,
    Rebound,
    Relapse,
    RelapseDefinition,
    find_episodes,
    first_episode_relapse,
    is_rebound,
    relapse_rule,
)
from app.scoring.response import (
    ABSOLUTE_TARGETS,
    RELATIVE_TARGETS,
    ClearanceCriterion,
    ClearanceTest,
    clearance_test,
    percent_improvement,
    reaches_pasi_response,
)

__all__ = [
    "AssessmentRef",
    "Change",
    "Clearance",
    "ClearanceCriterion",
    "DatedScore",
    "Episode",
    "OutcomeOptions",
    "Outcomes",
    "Rebound",
    "Relapse",
    "RelapseDefinition",
    "SeriesPoint",
    "TargetResponse",
    "TreatmentCourse",
    "compute_outcomes",
    "percent_improvement",
    "reaches_pasi_response",
]

NOTE_BASELINE_ZERO = (
    "baseline PASI is 0: percent improvement and the PASI 50-100 responses are undefined, "
    "relapse is not evaluable; absolute targets still apply"
)
NOTE_PERCENT_UNDEFINED = "baseline PASI is 0, so percent improvement is undefined"
NOTE_RELATIVE_UNDEFINED = "baseline PASI is 0, so a relative PASI response is undefined"
NOTE_CLEARANCE_PASI90_UNDEFINED = (
    "baseline PASI is 0, so clearance by PASI 90 (a relative response) is not evaluable"
)
NOTE_CLEARANCE_NO_IGA = "no assessment from the baseline on records IGA"
NOTE_REBOUND_BASELINE_ZERO = "baseline PASI is 0, so rebound (125 % of baseline) is not evaluable"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class DatedScore:
    """One assessment as the outcomes need it.

    ``pasi_tenths`` is PASI in integer tenths (0-720). Order is ``(assessed_on,
    recorded_at)``; ``recorded_at`` breaks ties between assessments on the same date.
    """

    assessment_id: str
    assessed_on: date
    recorded_at: datetime
    pasi_tenths: int
    bsa_percent: Decimal | None = None
    iga: int | None = None
    is_baseline: bool = False
    visit: str | None = None


@dataclass(frozen=True, slots=True)
class TreatmentCourse:
    """A treatment course: it may anchor the outcomes and, once ended, defines rebound."""

    treatment_id: str
    started_on: date
    ended_on: date | None = None


@dataclass(frozen=True, slots=True)
class OutcomeOptions:
    """Options of ``compute_outcomes``.

    ``relapse_threshold_tenths`` is required (>= 0) for ``PASI_ABOVE`` and ignored otherwise.
    ``treatment`` anchors the outcomes on a treatment course. ``rebound_window_days`` is the
    rebound window after a treatment's end: 90 days is the NPF's 3 months (Papp et al.,
    BMC Dermatology 2006;6:9, table 1); 60 gives the EMA's 2 months (CHMP/EWP/2454/02).
    """

    clearance: ClearanceCriterion = ClearanceCriterion.PASI100
    relapse: RelapseDefinition = RelapseDefinition.NPF_50PCT_LOSS
    relapse_threshold_tenths: int | None = None
    treatment: TreatmentCourse | None = None
    rebound_window_days: int = REBOUND_WINDOW_DAYS_NPF


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class AssessmentRef:
    assessment_id: str
    assessed_on: date
    pasi_tenths: int
    bsa_percent: Decimal | None


@dataclass(frozen=True, slots=True)
class Change:
    """Latest assessment versus baseline."""

    pasi_absolute_tenths: int
    percent_improvement: Decimal | None
    bsa_absolute: Decimal | None
    note: str | None


@dataclass(frozen=True, slots=True)
class TargetResponse:
    """A PASI response or absolute target: met by the latest assessment, first met by a
    counting assessment (days from the anchor). All None, with a note, when undefined."""

    reached_now: bool | None
    first_reached_on: date | None
    days: int | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Clearance:
    """Time to clearance (Kaplan-Meier ready): ``censored`` is True when not cleared yet and
    ``days_observed`` (anchor to latest) is always given. ``lasted_days`` runs from
    ``cleared_on`` to the first later assessment not meeting the criterion (``ongoing``
    False) or to the latest assessment (``ongoing`` True)."""

    criterion: ClearanceCriterion
    cleared_on: date | None
    days_to_clearance: int | None
    censored: bool | None
    days_observed: int
    lasted_days: int | None
    ongoing: bool | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One assessment on the course chart; ``counts`` is False before the baseline."""

    assessment_id: str
    assessed_on: date
    days: int
    pasi_tenths: int
    bsa_percent: Decimal | None
    iga: int | None
    percent_improvement: Decimal | None
    counts: bool
    visit: str | None = None


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Everything ``GET /v1/patients/{id}/outcomes`` reports. ``responses`` keys are, in
    order: pasi50, pasi75, pasi90, pasi100, pasi_le_1, pasi_le_2, pasi_le_3, pasi_le_5."""

    anchor: Literal["baseline", "treatment"]
    anchor_on: date
    treatment_id: str | None
    baseline: AssessmentRef
    latest: AssessmentRef
    change: Change
    responses: dict[str, TargetResponse]
    clearance: Clearance
    relapse: Relapse
    episodes: list[Episode]
    rebound: Rebound | None
    series: list[SeriesPoint]
    notes: list[str]


# --------------------------------------------------------------------------- exact helpers


def _ended_on(course: TreatmentCourse) -> tuple[date, date]:
    # Only called for courses with an end date.
    assert course.ended_on is not None
    return (course.ended_on, course.started_on)


def _ref(score: DatedScore) -> AssessmentRef:
    return AssessmentRef(
        assessment_id=score.assessment_id,
        assessed_on=score.assessed_on,
        pasi_tenths=score.pasi_tenths,
        bsa_percent=score.bsa_percent,
    )


# --------------------------------------------------------------------------- validation


def _validate_course(course: TreatmentCourse, field: str) -> None:
    if course.ended_on is not None and course.ended_on < course.started_on:
        raise ScoringInputError(
            field, f"ends ({course.ended_on}) before it starts ({course.started_on})"
        )


def _validate_options(options: OutcomeOptions, treatments: Sequence[TreatmentCourse]) -> None:
    if options.relapse is RelapseDefinition.PASI_ABOVE:
        threshold = options.relapse_threshold_tenths
        if threshold is None:
            raise ScoringInputError("relapse_threshold", "is required when relapse is pasi_above")
        if threshold < 0:
            raise ScoringInputError("relapse_threshold", "must be 0 or more")
    if options.rebound_window_days < 1:
        raise ScoringInputError("rebound_window_days", "must be at least 1 day")
    if options.treatment is not None:
        _validate_course(options.treatment, "treatment")
    for course in treatments:
        _validate_course(course, "treatments")


def _validate_score(score: DatedScore) -> None:
    if not 0 <= score.pasi_tenths <= PASI_MAX_TENTHS:
        raise ScoringInputError(
            "pasi_tenths",
            f"must be from 0 to {PASI_MAX_TENTHS} tenths (assessment {score.assessment_id})",
        )
    if score.iga is not None and not 0 <= score.iga <= IGA_MAX:
        raise ScoringInputError(
            "iga", f"must be from 0 to {IGA_MAX} (assessment {score.assessment_id})"
        )


# --------------------------------------------------------------------------- the parts


def _find_baseline(ordered: Sequence[DatedScore], options: OutcomeOptions, notes: list[str]) -> int:
    """Index of the baseline in ``ordered``."""
    if options.treatment is not None:
        start = options.treatment.started_on
        index = -1
        for i, score in enumerate(ordered):
            if score.assessed_on > start:
                break
            index = i
        if index < 0:
            raise ScoringInputError(
                "treatment", "has no assessment on or before its start date to serve as baseline"
            )
        notes.append(
            "baseline is the latest assessment on or before the treatment start "
            f"({start.isoformat()}); days count from the treatment start"
        )
        return index
    flagged = [i for i, score in enumerate(ordered) if score.is_baseline]
    if len(flagged) > 1:
        notes.append("several assessments are flagged as baseline; the first in order is used")
    return flagged[0] if flagged else 0


def _change(baseline: DatedScore, latest: DatedScore) -> Change:
    b = baseline.pasi_tenths
    bsa_absolute = (
        latest.bsa_percent - baseline.bsa_percent
        if latest.bsa_percent is not None and baseline.bsa_percent is not None
        else None
    )
    return Change(
        pasi_absolute_tenths=latest.pasi_tenths - b,
        percent_improvement=percent_improvement(b, latest.pasi_tenths),
        bsa_absolute=bsa_absolute,
        note=NOTE_PERCENT_UNDEFINED if b == 0 else None,
    )


def _responses(counting: Sequence[DatedScore], anchor_on: date) -> dict[str, TargetResponse]:
    """Every target, in one pass over the counting assessments.

    Each target is an exact upper limit on PASI in tenths: an absolute target's own, and for a
    PASI *k* response ``100*(b - x) >= k*b``, i.e. ``x <= floor((100 - k)*b / 100)`` (x is an
    integer). So the first assessment reaching a target is the first with ``x <= limit``:
    checking the loosest unmet limits first, each assessment settles every target it meets.
    """
    b = counting[0].pasi_tenths
    latest = counting[-1].pasi_tenths
    limits: dict[str, int] = {}
    undefined: set[str] = set()
    for key, k in RELATIVE_TARGETS:
        if b == 0:
            undefined.add(key)
        else:
            limits[key] = (100 - k) * b // 100
    limits.update(ABSOLUTE_TARGETS)
    pending = sorted(limits.items(), key=lambda item: item[1], reverse=True)
    first: dict[str, DatedScore] = {}
    for score in counting:
        while pending and score.pasi_tenths <= pending[0][1]:
            first[pending.pop(0)[0]] = score
        if not pending:
            break
    responses: dict[str, TargetResponse] = {}
    for key in [k for k, _ in RELATIVE_TARGETS] + [k for k, _ in ABSOLUTE_TARGETS]:
        if key in undefined:
            responses[key] = TargetResponse(None, None, None, NOTE_RELATIVE_UNDEFINED)
            continue
        reached = first.get(key)
        responses[key] = TargetResponse(
            reached_now=latest <= limits[key],
            first_reached_on=reached.assessed_on if reached else None,
            days=(reached.assessed_on - anchor_on).days if reached else None,
        )
    return responses


def _clearance(
    counting: Sequence[DatedScore],
    criterion: ClearanceCriterion,
    anchor_on: date,
    clears: ClearanceTest | None,
) -> Clearance:
    latest = counting[-1]
    days_observed = (latest.assessed_on - anchor_on).days
    if clears is None:
        return Clearance(
            criterion, None, None, None, days_observed, None, None, NOTE_CLEARANCE_PASI90_UNDEFINED
        )
    first_index = next(
        (i for i, s in enumerate(counting) if clears(s.pasi_tenths, s.iga) is True), None
    )
    if first_index is None:
        note = None
        if criterion is ClearanceCriterion.IGA_0 and all(s.iga is None for s in counting):
            note = NOTE_CLEARANCE_NO_IGA
        return Clearance(criterion, None, None, True, days_observed, None, None, note)
    cleared_on = counting[first_index].assessed_on
    ended_on, ongoing = latest.assessed_on, True
    for score in counting[first_index + 1 :]:
        if clears(score.pasi_tenths, score.iga) is False:
            ended_on, ongoing = score.assessed_on, False
            break
    return Clearance(
        criterion=criterion,
        cleared_on=cleared_on,
        days_to_clearance=(cleared_on - anchor_on).days,
        censored=False,
        days_observed=days_observed,
        lasted_days=(ended_on - cleared_on).days,
        ongoing=ongoing,
    )


def _rebound(
    counting: Sequence[DatedScore],
    options: OutcomeOptions,
    treatments: Sequence[TreatmentCourse],
) -> Rebound | None:
    course: TreatmentCourse | None = None
    if options.treatment is not None:
        if options.treatment.ended_on is not None:
            course = options.treatment
    else:
        ended = [t for t in treatments if t.ended_on is not None]
        if ended:
            course = max(ended, key=_ended_on)
    if course is None or course.ended_on is None:
        return None
    ended_on = course.ended_on
    window = options.rebound_window_days
    b = counting[0].pasi_tenths
    if b == 0:
        return Rebound(
            course.treatment_id, ended_on, window, None, None, None, NOTE_REBOUND_BASELINE_ZERO
        )
    any_in_window = False
    for score in counting:
        after = (score.assessed_on - ended_on).days
        if after <= 0:
            continue
        if after > window:
            break
        any_in_window = True
        if is_rebound(b, score.pasi_tenths):
            return Rebound(course.treatment_id, ended_on, window, True, score.assessed_on, after)
    note = None if any_in_window else f"no assessment within the {window} days after it ended"
    return Rebound(course.treatment_id, ended_on, window, False, None, None, note)


def _series(
    ordered: Sequence[DatedScore], baseline_index: int, anchor_on: date
) -> list[SeriesPoint]:
    b = ordered[baseline_index].pasi_tenths
    shown: dict[int, Decimal | None] = {}  # at most 721 distinct PASI values
    points: list[SeriesPoint] = []
    for i, s in enumerate(ordered):
        counts = i >= baseline_index
        improvement: Decimal | None = None
        if counts:
            x = s.pasi_tenths
            if x not in shown:
                shown[x] = percent_improvement(b, x)
            improvement = shown[x]
        points.append(
            SeriesPoint(
                s.assessment_id,
                s.assessed_on,
                (s.assessed_on - anchor_on).days,
                s.pasi_tenths,
                s.bsa_percent,
                s.iga,
                improvement,
                counts,
                s.visit,
            )
        )
    return points


# --------------------------------------------------------------------------- entry point


def compute_outcomes(
    assessments: Sequence[DatedScore],
    options: OutcomeOptions = OutcomeOptions(),
    treatments: Sequence[TreatmentCourse] = (),
) -> Outcomes | None:
    """Baseline, latest, change, responses, clearance, relapse, episodes, rebound, series.

    Returns None when there are no assessments. Raises ``ScoringInputError`` for unusable
    options (``relapse_threshold`` missing for ``pasi_above``, a treatment anchor with no
    assessment on or before its start, ...). ``treatments`` is only used for rebound when
    the outcomes are not anchored on a treatment (the course that ended last).
    """
    _validate_options(options, treatments)
    if not assessments:
        return None
    ordered = sorted(assessments, key=attrgetter("assessed_on", "recorded_at"))
    for score in ordered:
        _validate_score(score)

    notes: list[str] = []
    baseline_index = _find_baseline(ordered, options, notes)
    baseline = ordered[baseline_index]
    latest = ordered[-1]
    counting = ordered[baseline_index:]
    b = baseline.pasi_tenths
    anchored = options.treatment is not None
    anchor_on = (
        options.treatment.started_on if options.treatment is not None else baseline.assessed_on
    )

    if b == 0:
        notes.append(NOTE_BASELINE_ZERO)
    if baseline_index > 0:
        notes.append(
            f"{baseline_index} assessment(s) before the baseline are shown in series "
            "but count towards no outcome"
        )

    clears = clearance_test(options.clearance, b)
    rule = relapse_rule(options.relapse, b, options.relapse_threshold_tenths)
    episodes = find_episodes(counting, rule, clears) if b > 0 else []

    return Outcomes(
        anchor="treatment" if anchored else "baseline",
        anchor_on=anchor_on,
        treatment_id=options.treatment.treatment_id if options.treatment is not None else None,
        baseline=_ref(baseline),
        latest=_ref(latest),
        change=_change(baseline, latest),
        responses=_responses(counting, anchor_on),
        clearance=_clearance(counting, options.clearance, anchor_on, clears),
        relapse=first_episode_relapse(
            options.relapse,
            options.relapse_threshold_tenths,
            b,
            latest.assessed_on,
            episodes,
            rule.qualifying_name,
        ),
        episodes=episodes,
        rebound=_rebound(counting, options, treatments),
        series=_series(ordered, baseline_index, anchor_on),
        notes=notes,
    )
