"""Instruments an assessment may carry besides PASI: IGA/sPGA, PGA x BSA, DLQI, rule of tens."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import IntEnum, StrEnum
from typing import Final

from app.scoring.bsa import EXACT_CONTEXT
from app.scoring.errors import ScoringInputError
from app.scoring.pasi import PASI_MAX_TENTHS, checked_int, checked_percent

__all__ = [
    "DLQI_ITEM_MAX",
    "DLQI_TOTAL_MAX",
    "IGA_MAX",
    "DlqiAnswers",
    "DlqiBand",
    "DlqiScore",
    "IgaGrade",
    "PgaScale",
    "dlqi_band",
    "pga_x_bsa",
    "rule_of_tens",
    "score_dlqi",
]


class IgaGrade(IntEnum):
    """Investigator's / static Physician's Global Assessment, 0-4."""

    CLEAR = 0
    ALMOST_CLEAR = 1
    MILD = 2
    MODERATE = 3
    SEVERE = 4


IGA_MAX: Final = max(IgaGrade)


class PgaScale(StrEnum):
    """Which global assessment a PGA x BSA product used: 0-4 IGA (0-400) or 0-5 PGA (0-500)."""

    IGA_0_4 = "iga_0_4"
    PGA_0_5 = "pga_0_5"


_PGA_MAX: Final[dict[PgaScale, int]] = {PgaScale.IGA_0_4: 4, PgaScale.PGA_0_5: 5}


def pga_x_bsa(pga: int, bsa_percent: Decimal, scale: PgaScale = PgaScale.IGA_0_4) -> Decimal:
    """Exact product of the global assessment and BSA % (Walsh et al., J Am Acad Dermatol 2013).

    The grade's range depends on the scale, so the scale must be reported with the product.
    """
    try:
        scale = PgaScale(scale)
    except ValueError:
        raise ScoringInputError("scale", "must be iga_0_4 or pga_0_5") from None
    grade = checked_int(pga, "pga", _PGA_MAX[scale])
    bsa = checked_percent(bsa_percent, "bsa_percent")
    with localcontext(EXACT_CONTEXT):
        return Decimal(grade) * bsa


DLQI_ITEM_MAX: Final = 3
DLQI_TOTAL_MAX: Final = 30


class DlqiBand(StrEnum):
    """Meaning of a DLQI total (Hongbo et al., J Invest Dermatol 2005)."""

    NO_EFFECT = "no_effect"  # 0-1
    SMALL = "small"  # 2-5
    MODERATE = "moderate"  # 6-10
    VERY_LARGE = "very_large"  # 11-20
    EXTREMELY_LARGE = "extremely_large"  # 21-30


# Highest total of each band, in order (Hongbo et al. 2005).
_DLQI_BAND_UPPER: Final[tuple[tuple[int, DlqiBand], ...]] = (
    (1, DlqiBand.NO_EFFECT),
    (5, DlqiBand.SMALL),
    (10, DlqiBand.MODERATE),
    (20, DlqiBand.VERY_LARGE),
    (30, DlqiBand.EXTREMELY_LARGE),
)


def dlqi_band(total: int) -> DlqiBand:
    """Band of a DLQI total 0-30 (Hongbo et al. 2005)."""
    value = checked_int(total, "total", DLQI_TOTAL_MAX)
    for upper, band in _DLQI_BAND_UPPER:
        if value <= upper:
            return band
    raise AssertionError("unreachable: total is at most 30")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class DlqiAnswers:
    """DLQI answers as item scores (Finlay & Khan 1994); the item text is not shipped.

    Items score 0-3 (very much 3, a lot 2, a little 1, not at all 0); "not relevant" is sent
    as 0. None means unanswered. Item 7 has two parts, kept apart so neither is lost.
    """

    item1: int | None = None
    item2: int | None = None
    item3: int | None = None
    item4: int | None = None
    item5: int | None = None
    item6: int | None = None
    item7_prevented: bool | None = None  # part 1 of item 7: True ("yes") scores 3
    item7_problem: int | None = None  # part 2, only when item7_prevented is False: 0-2
    item8: int | None = None
    item9: int | None = None
    item10: int | None = None


@dataclass(frozen=True, slots=True)
class DlqiScore:
    """DLQI total (0-30) with its band, the ten item scores and how many were unanswered."""

    total: int | None  # None when 2+ items unanswered (Cardiff rule); one unanswered scores 0
    band: DlqiBand | None
    item_scores: tuple[int | None, ...]  # 10 entries, item 7 combined; None = unanswered
    unanswered: int


def _item(value: object, field: str) -> int | None:
    return None if value is None else checked_int(value, field, DLQI_ITEM_MAX)


def _item7(prevented: object, problem: object) -> int | None:
    """Item 7: "yes" scores 3; "no" is followed by a lot 2, a little 1, not at all 0."""
    if prevented is None:
        if problem is not None:
            raise ScoringInputError("item7_prevented", "is required when item7_problem is given")
        return None
    if not isinstance(prevented, bool):
        raise ScoringInputError("item7_prevented", "must be true or false")
    if prevented:
        if problem is not None:
            raise ScoringInputError("item7_problem", "must be absent when item7_prevented is true")
        return 3
    return None if problem is None else checked_int(problem, "item7_problem", 2)


def score_dlqi(answers: DlqiAnswers) -> DlqiScore:
    """Score the DLQI (Finlay & Khan 1994) with the Cardiff rule for missing answers.

    One unanswered item scores 0; with two or more unanswered there is no total.
    """
    scores: tuple[int | None, ...] = (
        _item(answers.item1, "item1"),
        _item(answers.item2, "item2"),
        _item(answers.item3, "item3"),
        _item(answers.item4, "item4"),
        _item(answers.item5, "item5"),
        _item(answers.item6, "item6"),
        _item7(answers.item7_prevented, answers.item7_problem),
        _item(answers.item8, "item8"),
        _item(answers.item9, "item9"),
        _item(answers.item10, "item10"),
    )
    unanswered = sum(1 for score in scores if score is None)
    if unanswered >= 2:
        return DlqiScore(total=None, band=None, item_scores=scores, unanswered=unanswered)
    total = sum(score for score in scores if score is not None)
    return DlqiScore(total=total, band=dlqi_band(total), item_scores=scores, unanswered=unanswered)


_TEN: Final = Decimal(10)


def rule_of_tens(
    bsa_percent: Decimal | None, pasi_tenths: int | None, dlqi_total: int | None
) -> bool | None:
    """Severe psoriasis by the "rule of tens": BSA > 10 or PASI > 10 or DLQI > 10 (Finlay 2005).

    True if any known value exceeds 10, False if all three are known and none does, None when
    the unknown values could still decide it. Exactly 10 is not severe.
    """
    exceeds: list[bool | None] = [
        None if bsa_percent is None else checked_percent(bsa_percent, "bsa_percent") > _TEN,
        None
        if pasi_tenths is None
        else checked_int(pasi_tenths, "pasi_tenths", PASI_MAX_TENTHS) > 100,
        None if dlqi_total is None else checked_int(dlqi_total, "dlqi_total", DLQI_TOTAL_MAX) > 10,
    ]
    if any(exceeds):
        return True
    if None in exceeds:
        return None
    return False
