"""PASI responses, absolute targets and clearance criteria: the exact threshold tests.

PASI is carried in integer tenths (``186`` means 18.6), so every test is an integer
comparison (SPEC section 2, "Exact arithmetic"): a PASI *k* response is
``b > 0 and 100 * (b - x) >= k * b`` and an absolute target PASI <= L is ``x <= 10 * L``,
where ``b`` is the baseline PASI and ``x`` the PASI being judged. Percent improvement is
only *displayed*, never compared.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from enum import StrEnum
from typing import Final

__all__ = [
    "ABSOLUTE_TARGETS",
    "RELATIVE_TARGETS",
    "ClearanceCriterion",
    "ClearanceTest",
    "clearance_test",
    "percent_improvement",
    "reaches_pasi_response",
]

RELATIVE_TARGETS: Final[tuple[tuple[str, int], ...]] = (
    ("pasi50", 50),
    ("pasi75", 75),
    ("pasi90", 90),
    ("pasi100", 100),
)
"""Relative responses: key and percent improvement *k* (met iff ``100*(b-x) >= k*b``)."""

ABSOLUTE_TARGETS: Final[tuple[tuple[str, int], ...]] = (
    ("pasi_le_1", 10),
    ("pasi_le_2", 20),
    ("pasi_le_3", 30),
    ("pasi_le_5", 50),
)
"""Absolute targets: key and the largest PASI in tenths that meets it (``x <= limit``)."""


class ClearanceCriterion(StrEnum):
    """What counts as clear skin (option ``clearance``). The choice is the user's.

    The members are the conventional endpoints of psoriasis trials and registries; the
    PASI-based ones are judged exactly on integer tenths.
    """

    PASI100 = "pasi100"
    """PASI = 0, i.e. complete clearance / PASI 100 (SPEC section 3 default). Absolute: it
    needs no baseline, so it is evaluable even when the baseline PASI is 0."""

    PASI90 = "pasi90"
    """PASI 90: at least 90 % improvement from the baseline PASI (``100*(b-x) >= 90*b``),
    the usual "almost clear" endpoint of biologic trials. Relative: not evaluable when the
    baseline PASI is 0."""

    PASI_LE_1 = "pasi_le_1"
    """Absolute PASI <= 1 (``x <= 10`` tenths), the absolute-PASI treat-to-target goal."""

    PASI_LE_2 = "pasi_le_2"
    """Absolute PASI <= 2 (``x <= 20`` tenths), the absolute-PASI treat-to-target goal."""

    IGA_0 = "iga_0"
    """IGA / sPGA 0 ("clear") on the 0-4 scale (SPEC section 2). Assessments without an IGA
    neither meet nor break it."""


def reaches_pasi_response(baseline_tenths: int, pasi_tenths: int, k: int) -> bool:
    """PASI *k* response, exactly: ``baseline > 0 and 100*(baseline - pasi) >= k*baseline``."""
    return baseline_tenths > 0 and 100 * (baseline_tenths - pasi_tenths) >= k * baseline_tenths


def percent_improvement(baseline_tenths: int, pasi_tenths: int) -> Decimal | None:
    """``100*(b - x)/b`` to one decimal, ROUND_HALF_UP (ties away from zero); None if b == 0.

    Computed in integers, so there is no intermediate rounding; a result that rounds to
    zero is ``Decimal("0.0")``, never ``-0.0``. For display only: never compare it.
    """
    if baseline_tenths <= 0:
        return None
    tenths_of_percent = 1000 * (baseline_tenths - pasi_tenths)
    quotient, remainder = divmod(abs(tenths_of_percent), baseline_tenths)
    if 2 * remainder >= baseline_tenths:
        quotient += 1
    signed = quotient if tenths_of_percent >= 0 else -quotient
    return Decimal(signed).scaleb(-1)


ClearanceTest = Callable[[int, int | None], bool | None]
"""Whether an assessment (its PASI in tenths, its IGA) meets a clearance criterion; None when
it neither meets nor breaks it (IGA 0 judged on an assessment without an IGA)."""


def clearance_test(criterion: ClearanceCriterion, baseline_tenths: int) -> ClearanceTest | None:
    """The test for ``criterion``, or None when it cannot be evaluated at all (PASI 90 with a
    baseline PASI of 0)."""
    if criterion is ClearanceCriterion.PASI100:
        return lambda pasi, _iga: pasi == 0
    if criterion is ClearanceCriterion.PASI90:
        if baseline_tenths == 0:
            return None
        return lambda pasi, _iga: reaches_pasi_response(baseline_tenths, pasi, 90)
    if criterion is ClearanceCriterion.PASI_LE_1:
        return lambda pasi, _iga: pasi <= 10
    if criterion is ClearanceCriterion.PASI_LE_2:
        return lambda pasi, _iga: pasi <= 20
    return lambda _pasi, iga: None if iga is None else iga == 0
