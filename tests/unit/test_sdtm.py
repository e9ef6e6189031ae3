"""The SDTM RS and Dataset-JSON mappers, as pure functions."""

from __future__ import annotations

import csv
import io
import json

from app.formats import sdtm
from app.formats.csv_export import ExportRow, assessments_csv

CONTENT = {
    "visit": "Week 12",
    "is_baseline": False,
    "pasi": {
        "head_neck": {"erythema": 1, "induration": 2, "desquamation": 0, "area_percent": 15},
        "upper_limbs": {"erythema": 0, "induration": 0, "desquamation": 0, "area_score": 0},
        "trunk": {"erythema": 1, "induration": 1, "desquamation": 1, "area_score": 1},
        "lower_limbs": {"erythema": 1, "induration": 1, "desquamation": 1, "area_score": 1},
    },
    "dlqi": {"item1": 2},
}
SCORES = {"pasi": 3.0, "pasi_region_details": {"head_neck": {"area_score": 2}}}


def _row(patient: str = "p1", assessed_on: str = "2021-03-29") -> ExportRow:
    return ExportRow(patient, "o1", [("sys", "S-1")], "a1", 2, assessed_on, CONTENT, SCORES)


def test_test_codes_are_sdtm_sized_and_unique() -> None:
    codes = sdtm.test_codes()
    assert len({c for c, _t in codes}) == len(codes)
    for code, test in codes:
        assert len(code) <= 8
        assert code.isalnum()
        assert code[0].isalpha()
        assert len(test) <= 40


def test_rs_rows_carry_every_input_and_the_total() -> None:
    rows = sdtm.rs_rows("ST", "S-1", _row(), 5)
    by_code = {r.testcd: r for r in rows}
    assert by_code["PSHNIND"].result == 2
    assert by_code["PSHNARE"].result == 2  # derived from the percentage, as scored
    assert by_code["PSHNAPC"].result == 15
    assert "PSULAPC" not in by_code
    assert by_code["PSTOTAL"].result == 3.0
    assert [r.rsseq for r in rows] == list(range(5, 5 + len(rows)))
    values = dict(zip(sdtm.COLUMNS, by_code["PSTOTAL"].values(), strict=True))
    assert values["DOMAIN"] == "RS"
    assert values["RSORRES"] == values["RSSTRESC"] == "3"
    assert values["RSSTRESN"] == 3.0
    assert values["RSBLFL"] is None
    assert values["RSDTC"] == "2021-03-29"
    assert values["VISIT"] == "Week 12"


def test_rsseq_restarts_per_subject() -> None:
    pairs = [("S-1", _row()), ("S-1", _row()), ("S-2", _row("p2"))]
    rows = list(sdtm.number_rows("ST", pairs))
    per = len(sdtm.rs_rows("ST", "S-1", _row(), 1))
    assert [r.rsseq for r in rows if r.usubjid == "S-1"] == list(range(1, 2 * per + 1))
    assert [r.rsseq for r in rows if r.usubjid == "S-2"] == list(range(1, per + 1))


def test_dataset_json_streams_a_valid_v1_1_document() -> None:
    rows = sdtm.number_rows("ST", [("S-1", _row())])
    chunks = list(sdtm.dataset_json(rows, "ST", "2026-01-01T00:00:00+00:00"))
    assert len(chunks) > 2
    doc = json.loads(b"".join(chunks))
    assert doc["datasetJSONVersion"] == "1.1.0"
    assert doc["records"] == len(doc["rows"])
    assert [c["name"] for c in doc["columns"]] == list(sdtm.COLUMNS)
    keys = sorted((c["keySequence"], c["name"]) for c in doc["columns"] if "keySequence" in c)
    assert [k for _n, k in keys] == ["STUDYID", "USUBJID", "RSTESTCD", "RSSEQ"]


def test_empty_dataset_json_is_valid() -> None:
    doc = json.loads(b"".join(sdtm.dataset_json(iter(()), "ST", "2026-01-01T00:00:00Z")))
    assert doc["rows"] == []
    assert doc["records"] == 0


def test_csv_rows_parse_and_export_no_dlqi_text() -> None:
    text = b"".join(assessments_csv([_row()])).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["dlqi_item1"] == "2"
    assert rows[0]["identifiers"] == "sys|S-1"
    assert "embarrassed" not in text.lower()
    rs = b"".join(sdtm.rs_csv(sdtm.number_rows("ST", [("S-1", _row())]))).decode()
    parsed = list(csv.DictReader(io.StringIO(rs)))
    assert parsed[0]["RSBLFL"] == ""
    assert {r["RSCAT"] for r in parsed} == {"PASI"}
