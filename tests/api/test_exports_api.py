"""SPEC 7, exports: the assessments CSV and the PASI as SDTM RS (CSV and Dataset-JSON),
scoped to the key's organizations, streamed, audited with every exported patient."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi.testclient import TestClient

from app.formats import csv_export, sdtm
from tests.api.helpers import (
    MRN_SYSTEM,
    TRIAL_SYSTEM,
    bearer,
    identifier,
    new_assessment,
    new_patient,
)

SDTM = {"studyid": "TRIAL-1", "identifier_system": TRIAL_SYSTEM}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _world(client: TestClient) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    patient = client.post(
        "/v1/patients",
        json={"identifiers": [identifier("S-1"), identifier("M-1", MRN_SYSTEM)], "sex": "female"},
    ).json()
    base = new_assessment(
        client, patient["id"], "2021-01-04", visit="Baseline", is_baseline=True, iga=4,
        dlqi={"item1": 3, "item2": 2},
    )  # fmt: skip
    week = new_assessment(client, patient["id"], "2021-03-29", visit="Week 12", pasi_level=5.7)
    return patient, base, week


def test_assessments_csv_has_every_column_and_value(client: TestClient) -> None:
    patient, base, week = _world(client)
    other = new_patient(client, "S-2", system=MRN_SYSTEM)
    new_assessment(client, other["id"], "2021-02-01")
    erroneous = new_assessment(client, patient["id"], "2021-02-02")
    client.request("DELETE", f"/v1/assessments/{erroneous['id']}", params={"reason": "wrong"})
    r = client.get("/v1/exports/assessments.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = _csv(r.text)
    assert list(rows[0]) == list(csv_export.COLUMNS)
    assert len(rows) == 3
    by_id = {row["assessment_id"]: row for row in rows}
    b = by_id[base["id"]]
    assert b["patient_id"] == patient["id"]
    assert b["organization_id"] == patient["organization_id"]
    assert b["identifiers"] == f"{TRIAL_SYSTEM}|S-1;{MRN_SYSTEM}|M-1"
    assert (b["version"], b["visit"], b["assessed_on"], b["is_baseline"]) == (
        "1", "Baseline", "2021-01-04", "true",
    )  # fmt: skip
    assert b["pasi_head_neck_erythema"] == str(base["pasi"]["head_neck"]["erythema"])
    assert b["dlqi_item1"] == "3"
    assert b["dlqi_item3"] == ""
    assert b["score_pasi"] == "28.7"
    assert b["iga"] == "4"
    assert by_id[week["id"]]["score_pasi"] == "5.7"
    only_trial = _csv(
        client.get("/v1/exports/assessments.csv", params={"identifier_system": TRIAL_SYSTEM}).text
    )
    assert {row["patient_id"] for row in only_trial} == {patient["id"]}
    dated = _csv(client.get("/v1/exports/assessments.csv", params={"from": "2021-03-01"}).text)
    assert [row["assessment_id"] for row in dated] == [week["id"]]


def test_sdtm_rs_rows(client: TestClient) -> None:
    _patient, base, _week = _world(client)
    r = client.get("/v1/exports/sdtm-rs.csv", params=SDTM)
    assert r.status_code == 200, r.text
    rows = _csv(r.text)
    assert list(rows[0]) == list(sdtm.COLUMNS)
    codes = {code for code, _test in sdtm.test_codes() if not code.endswith("APC")}
    for visit in ("Baseline", "Week 12"):
        assert codes <= {row["RSTESTCD"] for row in rows if row["VISIT"] == visit}
    # The baseline's percentages are exported beside the area scores they gave.
    assert {row["RSTESTCD"] for row in rows if row["VISIT"] == "Baseline"} >= {"PSHNAPC"}
    assert {row["STUDYID"] for row in rows} == {"TRIAL-1"}
    assert {row["DOMAIN"] for row in rows} == {"RS"}
    assert {row["USUBJID"] for row in rows} == {"S-1"}
    assert [int(row["RSSEQ"]) for row in rows] == list(range(1, len(rows) + 1))
    total = [row for row in rows if row["RSTESTCD"] == "PSTOTAL"]
    assert [(t["RSSTRESN"], t["RSBLFL"], t["VISIT"], t["RSDTC"]) for t in total] == [
        ("28.7", "Y", "Baseline", "2021-01-04"),
        ("5.7", "", "Week 12", "2021-03-29"),
    ]
    ery = next(row for row in rows if row["RSTESTCD"] == "PSHNERY")
    assert ery["RSORRES"] == ery["RSSTRESC"] == str(base["pasi"]["head_neck"]["erythema"])
    assert {row["RSCAT"] for row in rows} == {"PASI"}
    assert {row["RSEVAL"] for row in rows} == {"INVESTIGATOR"}
    missing = client.get("/v1/exports/sdtm-rs.csv", params={"studyid": "T"})
    assert missing.status_code == 422


def test_sdtm_dataset_json_structure(client: TestClient) -> None:
    _world(client)
    r = client.get("/v1/exports/sdtm-rs.json", params=SDTM)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["datasetJSONVersion"] == "1.1.0"
    assert doc["name"] == "RS"
    assert doc["itemGroupOID"] == "IG.RS"
    assert [c["name"] for c in doc["columns"]] == list(sdtm.COLUMNS)
    assert all({"itemOID", "name", "label", "dataType"} <= set(c) for c in doc["columns"])
    assert doc["records"] == len(doc["rows"]) > 2 * 17
    first = dict(zip(sdtm.COLUMNS, doc["rows"][0], strict=True))
    assert first["DOMAIN"] == "RS"
    assert first["RSSEQ"] == 1
    assert first["USUBJID"] == "S-1"


def test_exports_are_scoped_to_the_organization_and_audited(client: TestClient) -> None:
    orgs = [client.post("/v1/organizations", json={"name": n}).json()["id"] for n in "AB"]
    keys = []
    for org in orgs:
        r = client.post(
            "/v1/api-keys",
            json={"name": f"k-{org[:8]}", "scopes": ["read", "write"], "organizations": [org]},
        )
        keys.append(bearer(r.json()["key"]))
    mine = client.post("/v1/patients", json={"identifiers": [identifier("S-1")]}, headers=keys[0])
    theirs = client.post("/v1/patients", json={"identifiers": [identifier("S-1")]}, headers=keys[1])
    new_assessment(client, mine.json()["id"], "2021-01-04", headers=keys[0])
    new_assessment(client, theirs.json()["id"], "2021-01-04", headers=keys[1])
    for path, params in (
        ("/v1/exports/assessments.csv", {}),
        ("/v1/exports/sdtm-rs.csv", SDTM),
        ("/v1/exports/sdtm-rs.json", SDTM),
    ):
        r = client.get(path, params=params, headers=keys[0])
        assert r.status_code == 200, r.text
        assert theirs.json()["id"] not in r.text
    rows = _csv(client.get("/v1/exports/assessments.csv", headers=keys[0]).text)
    assert [row["patient_id"] for row in rows] == [mine.json()["id"]]
    events = client.get("/v1/audit-events", params={"action": "export-assessments"}).json()
    assert events["items"][0]["patient_ids"] == [mine.json()["id"]]
    assert events["items"][0]["organization_id"] == orgs[0]


def test_exports_stream_in_batches(client: TestClient, monkeypatch: Any) -> None:
    from app.services import exports as service

    patient = new_patient(client, "S-1")
    for day in range(1, 8):
        new_assessment(client, patient["id"], f"2021-01-{day:02d}")
    seen: list[int] = []
    original = service.export_rows

    def small(*args: Any, **kwargs: Any) -> Any:
        kwargs["batch"] = 3
        for n, row in enumerate(original(*args, **kwargs)):
            seen.append(n)
            yield row

    monkeypatch.setattr(service, "export_rows", small)
    r = client.get("/v1/exports/assessments.csv")
    rows = _csv(r.text)
    assert [row["assessed_on"] for row in rows] == [f"2021-01-{d:02d}" for d in range(1, 8)]
    assert len(seen) == 7
    # Streamed: sent in chunks as the rows are read, so no Content-Length is known up front.
    assert "content-length" not in r.headers
