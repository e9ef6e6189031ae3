"""Relapse, response episodes and rebound (Papp et al., BMC Dermatology 2006;6:9, table 1).

Every test is exact on PASI in integer tenths: ``b`` is the baseline PASI, ``x`` the PASI
being judged and ``best`` the lowest PASI of the episode so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final, Protocol

from app.scoring.response import ClearanceTest, reaches_pasi_response

__all__ = [
    "REBOUND_WINDOW_DAYS_EMA",
    "REBOUND_WINDOW_DAYS_NPF",
    "Episode",
    "Rebound",
    "Relapse",
    "RelapseDefinition",
    "RelapseRule",
    "find_episodes",
    "first_episode_relapse",
    "is_rebound",
    "relapse_rule",
]

REBOUND_WINDOW_DAYS_NPF: Final = 90
"""Rebound window after a treatment's end: the NPF's 3 months (Papp et al. 2006, table 1)."""
REBOUND_WINDOW_DAYS_EMA: Final = 60
"""The EMA's 2 months (CHMP/EWP/2454/02)."""


class RelapseDefinition(StrEnum):
    """How relapse is defined (option ``relapse``); each is a published choice."""

    NPF_50PCT_LOSS = "npf_50pct_loss"
    """US National Psoriasis Foundation definition (Papp et al., BMC Dermatology 2006;6:9,
    table 1; Carey et al., JAAD 2006): "loss of 50 % of PASI improvement from baseline in
    patients who achieve a clinically meaningful response (>= 50 % improvement in PASI
    from baseline)". Evaluable from the first PASI 50; relapse at the first later
    assessment with ``PASI >= best + 0.5 * (baseline - best)``, exactly ``2*x >= best + b``.
    """

    EMA_50PCT_LOSS = "ema_50pct_loss"
    """EMA wording (CHMP guideline on clinical investigation of medicinal products
    indicated for the treatment of psoriasis, CHMP/EWP/2454/02): a loss of *more than*
    50 % of the maximal improvement. As NPF but strictly greater: ``2*x > best + b``."""

    LOSS_OF_PASI75 = "loss_of_pasi75"
    """Loss of a PASI 75 response: evaluable from the first PASI 75; relapse at the first
    later assessment below PASI 75, exactly ``100*(b-x) < 75*b``."""

    PASI_ABOVE = "pasi_above"
    """A user-chosen absolute threshold N (``relapse_threshold_tenths``): evaluable from the
    first PASI 50 (as NPF, Papp et al. 2006); relapse at the first later PASI > N."""


@dataclass(frozen=True, slots=True)
class RelapseRule:
    """A relapse definition applied to one baseline: the qualifying response (which opens an
    episode) and the relapse test on ``(x, best)``."""

    qualifies: Callable[[int], bool]
    relapses: Callable[[int, int], bool]
    qualifying_name: str


def relapse_rule(
    definition: RelapseDefinition, b: int, threshold_tenths: int | None = None
) -> RelapseRule:
    """The rule for ``definition``; ``threshold_tenths`` is required for ``PASI_ABOVE``."""

    def pasi50(x: int) -> bool:
        return reaches_pasi_response(b, x, 50)

    if definition is RelapseDefinition.NPF_50PCT_LOSS:
        return RelapseRule(pasi50, lambda x, best: 2 * x >= best + b, "PASI 50")
    if definition is RelapseDefinition.EMA_50PCT_LOSS:
        return RelapseRule(pasi50, lambda x, best: 2 * x > best + b, "PASI 50")
    if definition is RelapseDefinition.LOSS_OF_PASI75:
        return RelapseRule(
            lambda x: reaches_pasi_response(b, x, 75),
            lambda x, best: 100 * (b - x) < 75 * b,
            "PASI 75",
        )
    if threshold_tenths is None:
        raise ValueError("pasi_above needs a threshold")
    threshold = threshold_tenths
    return RelapseRule(pasi50, lambda x, best: x > threshold, "PASI 50")


class Scored(Protocol):
    """What the episode search needs of an assessment."""

    @property
    def assessed_on(self) -> date: ...
    @property
    def pasi_tenths(self) -> int: ...
    @property
    def iga(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Episode:
    """A response episode: from the first assessment reaching the qualifying response (after
    the previous episode's relapse) to its own relapse. ``best_pasi_tenths`` is the lowest
    PASI before the relapse (``best_on`` its first date); ``cleared_on`` the first
    assessment in the episode, before its relapse, meeting the clearance criterion."""

    responded_on: date
    best_pasi_tenths: int
    best_on: date
    cleared_on: date | None
    relapsed_on: date | None


def find_episodes(
    counting: Sequence[Scored], rule: RelapseRule, clears: ClearanceTest | None
) -> list[Episode]:
    """Response episodes in order; one linear pass over the counting assessments (the
    baseline first). ``best`` restarts in every episode."""

    def cleared(score: Scored) -> bool:
        return clears is not None and clears(score.pasi_tenths, score.iga) is True

    episodes: list[Episode] = []
    n = len(counting)
    i = 0
    while i < n:
        while i < n and not rule.qualifies(counting[i].pasi_tenths):
            i += 1
        if i == n:
            break
        start = counting[i]
        best, best_on = start.pasi_tenths, start.assessed_on
        cleared_on = start.assessed_on if cleared(start) else None
        relapsed_on: date | None = None
        j = i + 1
        while j < n:
            score = counting[j]
            if rule.relapses(score.pasi_tenths, best):
                relapsed_on = score.assessed_on
                break
            if score.pasi_tenths < best:
                best, best_on = score.pasi_tenths, score.assessed_on
            if cleared_on is None and cleared(score):
                cleared_on = score.assessed_on
            j += 1
        episodes.append(Episode(start.assessed_on, best, best_on, cleared_on, relapsed_on))
        if relapsed_on is None:
            break
        i = j + 1
    return episodes


@dataclass(frozen=True, slots=True)
class Relapse:
    """Relapse in the first response episode. ``threshold_tenths`` is the ``pasi_above``
    threshold (None otherwise). When not evaluable, the five event fields are None and
    ``note`` says why."""

    definition: RelapseDefinition
    threshold_tenths: int | None
    evaluable_from: date | None
    relapsed_on: date | None
    days_to_relapse: int | None
    relapse_free_days: int | None
    censored: bool | None
    note: str | None = None


NOTE_RELAPSE_BASELINE_ZERO: Final = "baseline PASI is 0, so relapse is not evaluable"


def first_episode_relapse(
    definition: RelapseDefinition,
    threshold_tenths: int | None,
    b: int,
    latest_on: date,
    episodes: Sequence[Episode],
    qualifying_name: str,
) -> Relapse:
    """Time to relapse (Kaplan-Meier ready) from the first episode: days from
    ``evaluable_from``, censored at the latest assessment when no relapse happened."""
    threshold = threshold_tenths if definition is RelapseDefinition.PASI_ABOVE else None
    if b == 0 or not episodes:
        note = (
            NOTE_RELAPSE_BASELINE_ZERO
            if b == 0
            else f"no assessment has reached {qualifying_name} yet, so relapse is not evaluable"
        )
        return Relapse(definition, threshold, None, None, None, None, None, note)
    first = episodes[0]
    evaluable_from = first.responded_on
    if first.relapsed_on is not None:
        days = (first.relapsed_on - evaluable_from).days
        return Relapse(definition, threshold, evaluable_from, first.relapsed_on, days, days, False)
    free_days = (latest_on - evaluable_from).days
    return Relapse(definition, threshold, evaluable_from, None, None, free_days, True)


def is_rebound(b: int, x: int) -> bool:
    """Rebound level (Papp et al. 2006, table 1): PASI >= 125 % of baseline, ``4*x >= 5*b``."""
    return 4 * x >= 5 * b


@dataclass(frozen=True, slots=True)
class Rebound:
    """Rebound after a treatment's end (Papp et al., BMC Dermatology 2006;6:9, table 1):
    PASI >= 125 % of baseline (``4*x >= 5*b``) at an assessment with
    ``ended_on < assessed_on <= ended_on + window_days``. Only counting assessments
    (the baseline and later) are considered. ``rebounded`` is None when the baseline PASI is
    0, False with a note when no assessment falls in the window."""

    treatment_id: str | None
    treatment_ended_on: date | None
    window_days: int
    rebounded: bool | None
    rebound_on: date | None
    days_after_end: int | None
    note: str | None = None
