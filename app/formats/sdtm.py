"""The PASI as SDTM RS (Disease Response and Clin Classification) rows, and those rows as CSV
and as CDISC Dataset-JSON v1.1, as pure functions (docs/sdtm.md documents every code).

Every RSTESTCD/RSTEST here is SPONSOR-DEFINED: the CDISC QRS supplement for the PASI (PASI V2,
"Clinical Classification Supplement to the SDTMIG", supplement version 1.0) was a DRAFT when
this was written, and its test codes are not cited as controlled terminology. Only the RS
variable names, DOMAIN = "RS" and RSEVAL = "INVESTIGATOR" (the CDISC EVAL codelist) are CDISC's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from app.formats.csv_export import REGIONS, ExportRow, csv_lines

DATASET_JSON_VERSION = "1.1.0"
RSCAT = "PASI"
RSEVAL = "INVESTIGATOR"

REGION_CODES = {"head_neck": "HN", "upper_limbs": "UL", "trunk": "TR", "lower_limbs": "LL"}
REGION_NAMES = {
    "head_neck": "Head and Neck",
    "upper_limbs": "Upper Limbs",
    "trunk": "Trunk",
    "lower_limbs": "Lower Limbs",
}
SIGNS = {
    "erythema": ("ERY", "Erythema"),
    "induration": ("IND", "Induration"),
    "desquamation": ("DES", "Desquamation"),
    "area_score": ("ARE", "Area Score"),
    "area_percent": ("APC", "Area Percent"),  # only when the percentage was recorded
}
TOTAL = ("PSTOTAL", "PASI Total Score")


def test_codes() -> list[tuple[str, str]]:
    """Every (RSTESTCD, RSTEST) in export order: sponsor-defined, <= 8 and <= 40 characters."""
    codes = [
        (f"PS{REGION_CODES[r]}{code}", f"PASI {REGION_NAMES[r]} {name}")
        for r in REGIONS
        for code, name in SIGNS.values()
    ]
    return [*codes, TOTAL]


VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("STUDYID", "Study Identifier", "string"),
    ("DOMAIN", "Domain Abbreviation", "string"),
    ("USUBJID", "Unique Subject Identifier", "string"),
    ("RSSEQ", "Sequence Number", "integer"),
    ("RSTESTCD", "Assessment Short Name", "string"),
    ("RSTEST", "Assessment Name", "string"),
    ("RSCAT", "Category for Assessment", "string"),
    ("RSORRES", "Result or Finding in Original Units", "string"),
    ("RSSTRESC", "Character Result/Finding in Std Format", "string"),
    ("RSSTRESN", "Numeric Result/Finding in Standard Units", "decimal"),
    ("RSBLFL", "Baseline Flag", "string"),
    ("VISIT", "Visit Name", "string"),
    ("RSDTC", "Date/Time of Assessment", "date"),
    ("RSEVAL", "Evaluator", "string"),
)
COLUMNS = tuple(name for name, _label, _type in VARIABLES)


@dataclass(frozen=True, slots=True)
class RsRow:
    studyid: str
    usubjid: str
    rsseq: int
    testcd: str
    test: str
    result: float | int
    baseline: bool
    visit: str | None
    rsdtc: str

    def values(self) -> list[Any]:
        text = _result_text(self.result)
        return [
            self.studyid,
            "RS",
            self.usubjid,
            self.rsseq,
            self.testcd,
            self.test,
            RSCAT,
            text,
            text,
            self.result,
            "Y" if self.baseline else None,
            self.visit,
            self.rsdtc,
            RSEVAL,
        ]


def _result_text(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def rs_rows(studyid: str, usubjid: str, row: ExportRow, first_seq: int) -> list[RsRow]:
    """One assessment's RS rows: each region's signs and area score, then the total. RSSEQ
    continues from `first_seq` (it is unique within the subject)."""
    pasi = row.content.get("pasi") or {}
    details = row.scores.get("pasi_region_details") or {}
    results: list[tuple[str, str, float | int]] = []
    for region in REGIONS:
        given = dict(pasi.get(region) or {})
        # The area score the PASI used: given, or derived from the percentage.
        if given.get("area_score") is None:
            given["area_score"] = (details.get(region) or {}).get("area_score")
        for sign, (code, name) in SIGNS.items():
            value = given.get(sign)
            if value is not None:
                test = f"PASI {REGION_NAMES[region]} {name}"
                results.append((f"PS{REGION_CODES[region]}{code}", test, value))
    total = row.scores.get("pasi")
    if total is not None:
        results.append((*TOTAL, float(total)))
    visit = row.content.get("visit")
    baseline = bool(row.content.get("is_baseline"))
    return [
        RsRow(studyid, usubjid, first_seq + n, code, test, value, baseline, visit, row.assessed_on)
        for n, (code, test, value) in enumerate(results)
    ]


def number_rows(studyid: str, subject: Iterable[tuple[str, ExportRow]]) -> Iterator[RsRow]:
    """RS rows of assessments in subject order (grouped by USUBJID): RSSEQ runs 1, 2, ... per
    subject."""
    current: str | None = None
    seq = 1
    for usubjid, row in subject:
        if usubjid != current:
            current, seq = usubjid, 1
        rows = rs_rows(studyid, usubjid, row, seq)
        seq += len(rows)
        yield from rows


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _result_text(value)
    return str(value)


def rs_csv(rows: Iterable[RsRow]) -> Iterator[bytes]:
    return csv_lines(COLUMNS, ([_csv_cell(v) for v in r.values()] for r in rows))


def dataset_json(
    rows: Iterable[RsRow], studyid: str, created: str, originator: str = "psoriasis-scoring"
) -> Iterator[bytes]:
    """A CDISC Dataset-JSON v1.1 document (top-level metadata, `columns`, `rows`, `records`),
    streamed one row at a time: `records` (the row count) is written after the rows (JSON
    objects are unordered, so that is the same document)."""
    head: dict[str, Any] = {
        "datasetJSONCreationDateTime": created,
        "datasetJSONVersion": DATASET_JSON_VERSION,
        "fileOID": f"psoriasis-scoring.{studyid}.RS",
        "originator": originator,
        "sourceSystem": {"name": "psoriasis-scoring", "version": "1.0.0"},
        "studyOID": studyid,
        "itemGroupOID": "IG.RS",
        "name": "RS",
        "label": "Disease Response and Clin Classification",
        "columns": [
            {
                "itemOID": f"IT.RS.{name}",
                "name": name,
                "label": label,
                "dataType": data_type,
            }
            for name, label, data_type in VARIABLES
        ],
    }
    for column in head["columns"]:
        key = {"STUDYID": 1, "USUBJID": 2, "RSTESTCD": 3, "RSSEQ": 4}.get(column["name"])
        if key is not None:
            column["keySequence"] = key
    opening = json.dumps(head, ensure_ascii=False)[:-1]
    yield (opening + ', "rows": [').encode()
    count = 0
    for row in rows:
        yield ((",\n" if count else "\n") + json.dumps(row.values(), ensure_ascii=False)).encode()
        count += 1
    yield f'\n], "records": {count}}}'.encode()
