"""Cohort statistics (SPEC section 8): response rates per visit and Kaplan–Meier estimates.

Pure functions of per-patient ``Outcomes`` (SPEC section 3, ``compute_outcomes``): no I/O,
no clock, standard library only (plus the scoring core's outcomes, response and errors).
Every choice below is a named convention, so an answer can say which rule produced it; none
is a clinical rule of its own.

Wilson interval
    ``wilson_interval`` is the score interval without continuity correction (Wilson 1927;
    Newcombe, Statistics in Medicine 1998;17:857, method 3). It raises ``ValueError`` for
    ``n == 0``: there is no proportion to bound, and callers report ``None`` instead of the
    misleading ``(0, 1)``. At 0 or n successes the open end is exactly 0 or 1.

Time to event (``event_time``)
    Each patient contributes the per-patient figure of section 3, in days as
    ``compute_outcomes`` reports them (never clamped: with a treatment anchor, a baseline
    taken before the start has negative days).

    * ``clearance``: ``days_to_clearance`` (event) or censored at ``days_observed``; a patient
      whose criterion is not evaluable (PASI 90 with baseline PASI 0) does not enter.
    * ``relapse``: ``days_to_relapse`` (event) or censored at ``relapse_free_days``, both from
      ``evaluable_from``; only patients with a qualifying response enter.
    * ``pasi50`` / ``pasi75`` / ``pasi90``: the day the response was first reached (event) or
      censored at the follow-up so far (``clearance.days_observed``, anchor to latest);
      a patient whose response is undefined (baseline PASI 0) does not enter.

Kaplan–Meier (``kaplan_meier``)
    Product-limit estimate with the exponential Greenwood ("log(-log)") 95 % interval, as
    ``lifelines.KaplanMeierFitter`` computes it by default: ``V = sum d / (n (n - d))`` and
    ``exp(-exp(log(-log S) -/+ z sqrt(V) / log S))``. Conventions, each the same as lifelines:

    * ``steps`` has one row per distinct day with an event or a censoring; ``at_risk``
      counts the patients observed on or after that day (ties: events before censorings).
    * Before the first event ``S == 1`` and the interval is ``(1, 1)`` (lifelines' NaN,
      filled with 1). When the last patients at risk all have the event ``S == 0`` and the
      interval is ``(0, 0)``.
    * The median is the first day with ``S <= 0.5``, ``None`` when the curve stays above 0.5
      (lifelines' ``inf``); each end of its interval is the first day the lower or upper
      survival bound is ``<= 0.5``, as ``lifelines.utils.median_survival_times`` applied to
      ``confidence_interval_``.

    One deliberate difference: ``S == 0.5`` is decided exactly (in integers), where lifelines
    compares ``exp(sum(log((n - d) / n)))`` in floating point. At an exact tie lifelines can
    see 0.5000000000000001 and report the next event day (6 patients with events on days
    1-6: exact median day 3, lifelines 4). Off such ties both agree to 1e-9.
    An empty cohort gives ``n == 0``, no steps and no median.

Response rates per visit (``response_rates``)
    * A visit is the ``visit`` label of a counting series point (the baseline and later);
      points before the baseline and unlabelled points define no visit.
    * Several counting points with the same label: the latest in series order is the
      patient's assessment at that visit ("latest label wins").
    * A visit's ``median_day`` is the median of those patients' days at it (a half-day when
      their number is even); visits are ordered by median day, then label.
    * Relative targets (pasi50 ... pasi100) are judged exactly against the patient's baseline
      PASI with ``reaches_pasi_response``; absolute targets (pasi_le_1 ...) as ``PASI <=
      limit``. An undefined relative response (baseline PASI 0) counts as a non-response
      under every imputation, so each visit keeps one denominator ``n``.
    * ``observed``: ``n`` is the patients assessed at the visit.
    * ``nri`` (non-responder imputation): ``n`` is every cohort patient; a patient not
      assessed at the visit, or with no assessment at all (a ``None`` entry), is a
      non-responder.
    * ``locf`` (last observation carried forward): ``n`` is every patient with at least one
      assessment (``None`` entries are left out: there is nothing to carry). A patient not
      assessed at the visit is judged on the latest counting assessment, labelled or not, on
      or before the visit's median day; the baseline stands in when there is none (it is
      never a relative responder).
    * Each rate has ``proportion = responders / n`` and its Wilson 95 % interval, all
      ``None`` when ``n == 0``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import median

from app.scoring.errors import ScoringInputError
from app.scoring.outcomes import Outcomes, SeriesPoint
from app.scoring.response import ABSOLUTE_TARGETS, RELATIVE_TARGETS, reaches_pasi_response

__all__ = [
    "KM_METHOD",
    "Z_95",
    "CohortEvent",
    "Imputation",
    "KaplanMeier",
    "KaplanMeierStep",
    "Observation",
    "TargetRate",
    "VisitRates",
    "event_time",
    "kaplan_meier",
    "response_rates",
    "wilson_interval",
]

Z_95 = 1.959963984540054
"""The 0.975 standard normal quantile (1.95996398454005423...) as the nearest double, the value
``scipy.stats.norm.ppf(0.975)`` gives lifelines; ``statistics.NormalDist`` is 2 ulp off."""

KM_METHOD = "Kaplan–Meier; 95 % CI from Greenwood's variance on the log(-log) scale"

_TIE_BAND = 1e-9
"""Survival this close to 0.5 is re-decided exactly in integers (see the module docstring)."""


# --------------------------------------------------------------------------- Wilson


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for ``successes / n`` (Newcombe 1998, method 3).

    Chosen over the Wald interval because it stays inside [0, 1] and keeps its coverage
    for small ``n`` and rates near 0 % or 100 %, both common at trial visits. Raises
    ``ValueError`` when ``n < 1`` or ``successes`` is not in ``0..n``.
    """
    if n < 1:
        raise ValueError("a Wilson interval needs n >= 1")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be from 0 to n ({n})")
    p = successes / n
    z2 = z * z
    centre = 2 * successes + z2
    half = z * math.sqrt(z2 + 4 * successes * (1 - p))
    denominator = 2 * (n + z2)
    lower = 0.0 if successes == 0 else (centre - half) / denominator
    upper = 1.0 if successes == n else (centre + half) / denominator
    return lower, upper


# --------------------------------------------------------------------------- time to event


class CohortEvent(StrEnum):
    """The event a Kaplan–Meier estimate is about (``event`` of the time-to-event query)."""

    CLEARANCE = "clearance"
    RELAPSE = "relapse"
    PASI50 = "pasi50"
    PASI75 = "pasi75"
    PASI90 = "pasi90"


@dataclass(frozen=True, slots=True)
class Observation:
    """One patient's time to event: ``days`` to the event, or to censoring if not ``event``."""

    days: int
    event: bool


def event_time(outcomes: Outcomes, event: CohortEvent) -> Observation | None:
    """The patient's observation for ``event``, or None when the patient does not enter.

    A patient enters only where section 3 gives a figure: clearance when its criterion is
    evaluable, relapse once a qualifying response makes it evaluable, a PASI response when
    the baseline PASI is not 0.
    """
    if event is CohortEvent.CLEARANCE:
        clearance = outcomes.clearance
        if clearance.censored is None:
            return None
        if clearance.censored:
            return Observation(clearance.days_observed, False)
        assert clearance.days_to_clearance is not None  # set whenever not censored
        return Observation(clearance.days_to_clearance, True)
    if event is CohortEvent.RELAPSE:
        relapse = outcomes.relapse
        if relapse.evaluable_from is None or relapse.censored is None:
            return None
        if relapse.censored:
            assert relapse.relapse_free_days is not None  # set whenever evaluable
            return Observation(relapse.relapse_free_days, False)
        assert relapse.days_to_relapse is not None  # set whenever relapsed
        return Observation(relapse.days_to_relapse, True)
    response = outcomes.responses[event.value]
    if response.reached_now is None:
        return None
    if response.days is None:
        return Observation(outcomes.clearance.days_observed, False)
    return Observation(response.days, True)


# --------------------------------------------------------------------------- Kaplan–Meier


@dataclass(frozen=True, slots=True)
class KaplanMeierStep:
    """The estimate just after ``day``: ``at_risk`` were observed on or after it."""

    day: int
    at_risk: int
    events: int
    censored: int
    survival: float
    ci_lower: float
    ci_upper: float


@dataclass(frozen=True, slots=True)
class KaplanMeier:
    """A Kaplan–Meier estimate; ``median_days`` and each end of ``median_ci`` are None when
    the curve (or that survival bound) never falls to 0.5."""

    n: int
    events: int
    censored: int
    median_days: int | None
    median_ci: tuple[int | None, int | None]
    steps: tuple[KaplanMeierStep, ...]
    method: str = KM_METHOD


def _log_log_interval(survival: float, log_survival: float, variance: float) -> tuple[float, float]:
    """Exponential Greenwood interval, in lifelines' arithmetic (its ``_bounds``)."""
    if survival == 1.0:
        return 1.0, 1.0
    if survival == 0.0:
        return 0.0, 0.0
    spread = Z_95 * math.sqrt(variance) / log_survival
    log_minus_log = math.log(-log_survival)
    return (
        math.exp(-math.exp(log_minus_log - spread)),
        math.exp(-math.exp(log_minus_log + spread)),
    )


def _exactly_at_most_half(kept: Sequence[int], at_risk: Sequence[int]) -> bool:
    """``prod(kept / at_risk) <= 1/2`` decided in integers."""
    return 2 * math.prod(kept) <= math.prod(at_risk)


def _first_day_at_or_below_half(
    steps: Sequence[KaplanMeierStep], value: Callable[[KaplanMeierStep], float]
) -> int | None:
    for step in steps:
        if value(step) <= 0.5:
            return step.day
    return None


def kaplan_meier(observations: Sequence[Observation]) -> KaplanMeier:
    """Kaplan–Meier estimate of the probability of not yet having had the event.

    One sort, then one pass over the distinct days (see the module docstring for the
    conventions, all lifelines' except the exact 0.5 tie of the median).
    """
    counts: dict[int, list[int]] = {}
    for observation in observations:
        tally = counts.setdefault(observation.days, [0, 0])
        tally[0 if observation.event else 1] += 1

    at_risk = len(observations)
    log_survival = 0.0
    variance = 0.0
    survival = 1.0
    kept_factors: list[int] = []
    risk_factors: list[int] = []
    median_days: int | None = None
    steps: list[KaplanMeierStep] = []
    for day in sorted(counts):
        events, censored = counts[day]
        if events:
            kept = at_risk - events
            kept_factors.append(kept)
            risk_factors.append(at_risk)
            if kept == 0:
                survival = 0.0
                log_survival = -math.inf
            else:
                log_survival += math.log(kept) - math.log(at_risk)
                variance += events / (at_risk * kept)
                survival = math.exp(log_survival)
            if median_days is None:
                reached = survival <= 0.5
                if abs(survival - 0.5) <= _TIE_BAND:
                    reached = _exactly_at_most_half(kept_factors, risk_factors)
                if reached:
                    median_days = day
        lower, upper = _log_log_interval(survival, log_survival, variance)
        steps.append(KaplanMeierStep(day, at_risk, events, censored, survival, lower, upper))
        at_risk -= events + censored

    total_events = sum(step.events for step in steps)
    return KaplanMeier(
        n=len(observations),
        events=total_events,
        censored=len(observations) - total_events,
        median_days=median_days,
        median_ci=(
            _first_day_at_or_below_half(steps, lambda step: step.ci_lower),
            _first_day_at_or_below_half(steps, lambda step: step.ci_upper),
        ),
        steps=tuple(steps),
    )


# --------------------------------------------------------------------------- response rates


class Imputation(StrEnum):
    """How patients not assessed at a visit are counted (``imputation`` of the query)."""

    OBSERVED = "observed"
    """Only the patients assessed at the visit."""

    NRI = "nri"
    """Non-responder imputation: every cohort patient; not assessed means non-responder."""

    LOCF = "locf"
    """Last observation carried forward to the visit's median day."""


@dataclass(frozen=True, slots=True)
class TargetRate:
    """Responders to one target at one visit; the last three are None when ``n == 0``."""

    target: str
    responders: int
    proportion: float | None
    ci_lower: float | None
    ci_upper: float | None


@dataclass(frozen=True, slots=True)
class VisitRates:
    """One visit's response rates. ``assessed`` is the patients with an assessment at the
    visit (whatever the imputation), ``n`` the denominator under ``imputation``; ``rates``
    follow the order of the requested targets."""

    visit: str
    median_day: float
    imputation: Imputation
    assessed: int
    n: int
    rates: tuple[TargetRate, ...]


def _relative(k: int) -> Callable[[int, int], bool]:
    def meets(baseline_tenths: int, pasi_tenths: int) -> bool:
        return reaches_pasi_response(baseline_tenths, pasi_tenths, k)

    return meets


def _absolute(limit_tenths: int) -> Callable[[int, int], bool]:
    def meets(baseline_tenths: int, pasi_tenths: int) -> bool:
        return pasi_tenths <= limit_tenths

    return meets


_TARGET_TESTS: dict[str, Callable[[int, int], bool]] = {
    **{key: _relative(k) for key, k in RELATIVE_TARGETS},
    **{key: _absolute(limit) for key, limit in ABSOLUTE_TARGETS},
}
"""Each target's exact test on (baseline PASI, PASI) in tenths."""


def _target_tests(targets: Sequence[str]) -> list[tuple[str, Callable[[int, int], bool]]]:
    tests: list[tuple[str, Callable[[int, int], bool]]] = []
    seen: set[str] = set()
    for target in targets:
        test = _TARGET_TESTS.get(target)
        if test is None:
            raise ScoringInputError(
                "targets", f"has an unknown target {target!r}; use {', '.join(_TARGET_TESTS)}"
            )
        if target not in seen:
            seen.add(target)
            tests.append((target, test))
    return tests


@dataclass(frozen=True, slots=True)
class _Patient:
    """A patient's counting points, their days, and the latest point of each visit label."""

    baseline_tenths: int
    counting: list[SeriesPoint]
    days: list[int]
    at_visit: dict[str, SeriesPoint]


def _patient(outcomes: Outcomes) -> _Patient:
    counting = [point for point in outcomes.series if point.counts]
    at_visit = {point.visit: point for point in counting if point.visit is not None}
    return _Patient(
        outcomes.baseline.pasi_tenths, counting, [point.days for point in counting], at_visit
    )


def _carried_forward(patient: _Patient, median_day: float) -> SeriesPoint:
    """Latest counting point on or before ``median_day``; the baseline if there is none."""
    index = bisect_right(patient.days, median_day)
    return patient.counting[max(index - 1, 0)]


def response_rates(
    patients: Sequence[Outcomes | None], targets: Sequence[str], imputation: Imputation
) -> list[VisitRates]:
    """Responders, proportion and Wilson 95 % interval per visit and target.

    ``patients`` is the whole cohort, one entry per patient; ``None`` is a patient with no
    assessment. Raises ``ScoringInputError`` for an unknown target (a repeated one is
    reported once). O(P·V·log A) for P patients, V visits, A assessments per patient.
    """
    tests = _target_tests(targets)
    assessed = [_patient(outcomes) for outcomes in patients if outcomes is not None]

    visit_days: dict[str, list[int]] = {}
    for patient in assessed:
        for label, labelled in patient.at_visit.items():
            visit_days.setdefault(label, []).append(labelled.days)
    visits = sorted((float(median(days)), label) for label, days in visit_days.items())

    results: list[VisitRates] = []
    for median_day, label in visits:
        judged: list[tuple[int, int]] = []  # (baseline PASI, PASI) of each judged patient
        for patient in assessed:
            point = patient.at_visit.get(label)
            if point is None and imputation is Imputation.LOCF:
                point = _carried_forward(patient, median_day)
            if point is not None:
                judged.append((patient.baseline_tenths, point.pasi_tenths))
        n = len(patients) if imputation is Imputation.NRI else len(judged)
        rates: list[TargetRate] = []
        for target, meets in tests:
            responders = sum(1 for b, x in judged if meets(b, x))
            if n == 0:
                rates.append(TargetRate(target, responders, None, None, None))
                continue
            lower, upper = wilson_interval(responders, n)
            rates.append(TargetRate(target, responders, responders / n, lower, upper))
        results.append(
            VisitRates(
                visit=label,
                median_day=median_day,
                imputation=imputation,
                assessed=len(visit_days[label]),
                n=n,
                rates=tuple(rates),
            )
        )
    return results
