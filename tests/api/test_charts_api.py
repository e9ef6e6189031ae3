"""The chart endpoints end to end (SPEC section 8): GET /v1/patients/{id}/chart.svg and .png and
GET /v1/cohorts/time-to-event.svg, read back from their bytes (SVG with xml.etree, the gids that
app.formats.charts documents; PNG by its IHDR chunk)."""

from __future__ import annotations

import struct
import uuid
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from app.formats.charts import (
    GID_ASSESSMENTS,
    GID_BASELINE,
    MESSAGE_NO_ASSESSMENTS,
    MESSAGE_NO_OBSERVATIONS,
    MESSAGE_ONE_ASSESSMENT,
    POINT_GIDS,
)
from tests.api.helpers import (
    TRIAL_SYSTEM,
    error_locations,
    new_assessment,
    new_patient,
    new_treatment,
    problem,
)
from tests.api.test_organizations import as_key, new_tenant

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (date, PASI, visit): a responder over a year with a course of three infusions.
COURSE = [
    ("2011-10-20", 28.7, "Week 0"),
    ("2011-11-17", 19.6, "Week 4"),
    ("2012-01-12", 8.1, "Week 12"),
    ("2012-04-05", 2.2, "Week 24"),
    ("2012-10-18", 0, "Week 52"),
]
DOSES = [
    {"given_on": day, "amount": 1e6, "unit": "cells/kg"}
    for day in ("2011-10-20", "2011-11-17", "2011-12-15")
]


def parse(svg: bytes) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def markers(root: ET.Element, gid: str) -> list[ET.Element]:
    group = root.find(f".//{SVG}g[@id='{gid}']")
    return [] if group is None else list(group.iter(f"{SVG}use"))


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    length, chunk, width, height = struct.unpack(">I4sII", png[8:24])
    assert (length, chunk) == (13, b"IHDR")
    return width, height


def svg_of(client: TestClient, url: str, **params: object) -> ET.Element:
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/svg+xml"
    return parse(r.content)


@pytest.fixture
def patient(client: TestClient) -> str:
    pid = str(new_patient(client, "S-042")["id"])
    for day, pasi, visit in COURSE:
        new_assessment(client, pid, day, pasi_level=pasi, visit=visit, bsa_percent=pasi)
    new_treatment(client, pid, "2011-10-20", ended_on="2011-12-15", doses=DOSES)
    return pid


def test_the_svg_holds_one_point_per_assessment_and_the_clinical_labels(
    client: TestClient, patient: str
) -> None:
    root = svg_of(client, f"/v1/patients/{patient}/chart.svg")
    assert sum(len(markers(root, gid)) for gid in POINT_GIDS) == len(COURSE)
    assert len(markers(root, GID_BASELINE)) == 1
    assert len(markers(root, GID_ASSESSMENTS)) == len(COURSE) - 1
    labels = texts(root)
    assert f"{TRIAL_SYSTEM}|S-042: PASI over time" in labels  # the first identifier
    assert "Baseline (Week 0)" in labels
    for _day, _pasi, visit in COURSE[1:]:
        assert visit in labels
    assert "PASI 75 (7.2)" in labels
    assert "PASI 90 (2.9)" in labels
    assert "UC-MSC infusion: 3 doses of 1×10⁶ cells/kg" in labels
    assert "Clearance (PASI 100) 2012-10-18" in labels
    assert len(markers(root, "doses-0")) == len(DOSES)
    assert root.find(f".//{SVG}g[@id='bsa']") is not None  # BSA recorded: a second panel


def test_the_chart_follows_the_clearance_option_like_the_outcomes(
    client: TestClient, patient: str
) -> None:
    labels = texts(svg_of(client, f"/v1/patients/{patient}/chart.svg", clearance="pasi90"))
    assert "Clearance (PASI 90) 2012-04-05" in labels  # 2.2 is 92.3 % better than 28.7


@pytest.mark.parametrize(("width", "height"), [(1000, 640), (800, 500), (1600, 900)])
def test_the_png_decodes_to_the_stated_size(
    client: TestClient, patient: str, width: int, height: int
) -> None:
    params = {} if (width, height) == (1000, 640) else {"width": width, "height": height}
    r = client.get(f"/v1/patients/{patient}/chart.png", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert png_size(r.content) == (width, height)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"width": 799}, "width"),
        ({"width": 4001}, "width"),
        ({"height": 499}, "height"),
        ({"height": 4001}, "height"),
        ({"width": "wide"}, "width"),
    ],
)
def test_a_png_size_outside_the_limits_is_422(
    client: TestClient, patient: str, params: dict[str, object], parameter: str
) -> None:
    body = problem(client.get(f"/v1/patients/{patient}/chart.png", params=params), 422)
    assert parameter in error_locations(body)


@pytest.mark.parametrize("assessments", [0, 1])
def test_a_patient_with_no_or_one_assessment_gets_a_chart_that_says_so(
    client: TestClient, assessments: int
) -> None:
    pid = str(new_patient(client, f"few-{assessments}")["id"])
    if assessments:
        new_assessment(client, pid, "2020-01-06", pasi_level=12, visit="Screening")
    message = MESSAGE_ONE_ASSESSMENT if assessments else MESSAGE_NO_ASSESSMENTS
    root = svg_of(client, f"/v1/patients/{pid}/chart.svg")
    assert message in texts(root)
    assert sum(len(markers(root, gid)) for gid in POINT_GIDS) == assessments
    r = client.get(f"/v1/patients/{pid}/chart.png")
    assert r.status_code == 200, r.text
    assert png_size(r.content) == (1000, 640)


def test_a_treatment_course_without_assessments_is_still_shaded(client: TestClient) -> None:
    pid = str(new_patient(client, "course-only")["id"])
    new_treatment(client, pid, "2020-01-06", agent="methotrexate")
    root = svg_of(client, f"/v1/patients/{pid}/chart.svg")
    assert MESSAGE_NO_ASSESSMENTS in texts(root)
    assert root.find(f".//{SVG}g[@id='course-0']") is not None


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_another_organizations_patient_is_404_like_an_unknown_one(
    client: TestClient, suffix: str
) -> None:
    a, b = new_tenant(client, "clinic-a"), new_tenant(client, "study-b")
    as_a, as_b = as_key(client, a.token), as_key(client, b.token)
    pid = str(new_patient(as_a, "A-1")["id"])
    new_assessment(as_a, pid, "2020-01-06", pasi_level=10)
    assert as_a.get(f"/v1/patients/{pid}/chart.{suffix}").status_code == 200

    unknown = str(uuid.uuid4())
    foreign = problem(as_b.get(f"/v1/patients/{pid}/chart.{suffix}"), 404)
    missing = problem(as_b.get(f"/v1/patients/{unknown}/chart.{suffix}"), 404)
    assert foreign["detail"].replace(pid, "<id>") == missing["detail"].replace(unknown, "<id>")
    assert (foreign["type"], foreign["title"]) == (missing["type"], missing["title"])


def test_the_chart_read_is_audited_against_the_patient(client: TestClient, patient: str) -> None:
    assert client.get(f"/v1/patients/{patient}/chart.png").status_code == 200
    events = client.get("/v1/audit-events", params={"patient_id": patient, "limit": 200}).json()
    (event,) = [e for e in events["items"] if e["action"] == "read-patient-chart"]
    assert (event["status"], event["route"]) == (200, "/v1/patients/{patient_id}/chart.png")


def test_the_kaplan_meier_svg_shows_the_numbers_at_risk(client: TestClient) -> None:
    # Four patients: cleared on days 28 and 56, censored on days 28 and 84.
    for value, rows in {
        "K-1": [("2021-01-04", 10), ("2021-02-01", 0)],
        "K-2": [("2021-01-04", 10), ("2021-03-01", 0)],
        "K-3": [("2021-01-04", 10), ("2021-02-01", 4)],
        "K-4": [("2021-01-04", 10), ("2021-03-29", 3)],
    }.items():
        pid = str(new_patient(client, value)["id"])
        for day, pasi in rows:
            new_assessment(client, pid, day, pasi_level=pasi)
    km = client.get("/v1/cohorts/time-to-event").json()
    assert [(s["day"], s["at_risk"]) for s in km["steps"]] == [(28, 4), (56, 2), (84, 1)]

    root = svg_of(client, "/v1/cohorts/time-to-event.svg")
    labels = texts(root)
    assert "Time to clearance" in labels
    assert "At risk" in labels
    assert "Median 56 days" in labels
    cells = {
        group.get("id"): [t.text for t in group.iter(f"{SVG}text")]
        for group in root.iter(f"{SVG}g")
        if (group.get("id") or "").startswith("at-risk-day-")
    }
    assert cells["at-risk-day-0"] == ["4"]
    assert cells["at-risk-day-28"] == ["4"]  # the first step on or after the tick
    assert all(cell in (["4"], ["2"], ["1"], ["0"]) for cell in cells.values())
    assert len(markers(root, "km-censored")) == 2  # days 28 and 84


def test_the_kaplan_meier_svg_of_an_empty_cohort_says_so(client: TestClient) -> None:
    root = svg_of(client, "/v1/cohorts/time-to-event.svg", event="relapse")
    labels = texts(root)
    assert MESSAGE_NO_OBSERVATIONS in labels
    assert "Time to relapse" in labels
