"""The assessments CSV export as pure functions: one flat row per assessment, fixed columns.

Inputs are plain values (the stored content and scores as JSON-ready dicts), so this module
knows nothing of the database or the web layer. DLQI answers are exported as numbers only
(the questionnaire text is (c) Cardiff University and never shipped).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REGIONS = ("head_neck", "upper_limbs", "trunk", "lower_limbs")
REGION_FIELDS = ("erythema", "induration", "desquamation", "area_score", "area_percent")
DLQI_ITEMS = (
    "item1", "item2", "item3", "item4", "item5", "item6",
    "item7_prevented", "item7_problem", "item8", "item9", "item10",
)  # fmt: skip
SCORE_FIELDS = (
    "pasi", "bsa_percent", "bsa_source", "bsa_severity", "iga", "pga_x_bsa", "pga_scale",
    "dlqi", "dlqi_band", "severe_by_rule_of_tens",
)  # fmt: skip

COLUMNS: tuple[str, ...] = (
    "patient_id",
    "organization_id",
    "identifiers",
    "assessment_id",
    "version",
    "visit",
    "assessed_on",
    "assessor",
    "is_baseline",
    *(f"pasi_{r}_{f}" for r in REGIONS for f in REGION_FIELDS),
    "iga",
    "bsa_percent",
    *(f"dlqi_{i}" for i in DLQI_ITEMS),
    *(f"score_{s}" for s in SCORE_FIELDS),
    *(f"score_pasi_{r}" for r in REGIONS),
)


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One active assessment with its patient, as the exports read it."""

    patient_id: str
    organization_id: str
    identifiers: Sequence[tuple[str, str]]  # (system, value), in the patient's order
    assessment_id: str
    version: int
    assessed_on: str  # ISO 8601 date
    content: Mapping[str, Any]
    scores: Mapping[str, Any]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def identifiers_cell(identifiers: Iterable[tuple[str, str]]) -> str:
    """`system|value` pairs joined by `;` (the same token the search parameters take)."""
    return ";".join(f"{s}|{v}" for s, v in identifiers)


def flatten(row: ExportRow) -> list[str]:
    content, scores = row.content, row.scores
    pasi = content.get("pasi") or {}
    dlqi = content.get("dlqi") or {}
    regions = scores.get("pasi_regions") or {}
    values: list[Any] = [
        row.patient_id,
        row.organization_id,
        identifiers_cell(row.identifiers),
        row.assessment_id,
        row.version,
        content.get("visit"),
        row.assessed_on,
        content.get("assessor"),
        content.get("is_baseline"),
        *((pasi.get(r) or {}).get(f) for r in REGIONS for f in REGION_FIELDS),
        content.get("iga"),
        content.get("bsa_percent"),
        *(dlqi.get(i) for i in DLQI_ITEMS),
        *(scores.get(s) for s in SCORE_FIELDS),
        *(regions.get(r) for r in REGIONS),
    ]
    return [_cell(v) for v in values]


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[str]]) -> Iterator[bytes]:
    """The header, then each row, one encoded CSV line at a time (RFC 4180, CRLF)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: Sequence[str]) -> bytes:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue().encode()

    yield line(header)
    for values in rows:
        yield line(values)


def assessments_csv(rows: Iterable[ExportRow]) -> Iterator[bytes]:
    return csv_lines(COLUMNS, (flatten(r) for r in rows))
