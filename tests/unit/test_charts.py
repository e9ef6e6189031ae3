"""The course and Kaplan–Meier charts (SPEC section 8), read back from the bytes they produce.

The SVGs are parsed with xml.etree: labels are real ``<text>`` elements (svg.fonttype none)
and every marker of a Line2D is one ``<use>`` inside the ``<g id=...>`` named by its gid, so
the tests count points and read labels the way a client or a screen reader would.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from app.formats.charts import (
    DEFAULT_PNG_HEIGHT,
    DEFAULT_PNG_WIDTH,
    GID_ASSESSMENTS,
    GID_BASELINE,
    GID_BEFORE_BASELINE,
    MESSAGE_NO_ASSESSMENTS,
    MESSAGE_NO_OBSERVATIONS,
    MESSAGE_ONE_ASSESSMENT,
    NOTE_NO_GUIDES,
    POINT_GIDS,
    ChartCourse,
    ChartDose,
    CourseChart,
    KmChart,
    KmStep,
    km_curve_svg,
    patient_course_png,
    patient_course_svg,
)
from app.scoring.outcomes import DatedScore, Outcomes, compute_outcomes

SVG = "{http://www.w3.org/2000/svg}"
REPO = Path(__file__).resolve().parents[2]
BASELINE_DAY = date(2011, 10, 20)

# (date, PASI in tenths, visit, BSA %): a UC-MSC responder over a year, cleared at week 52.
COURSE = [
    (date(2011, 10, 20), 287, "Week 0", "38"),
    (date(2011, 11, 17), 196, "Week 4", "27"),
    (date(2012, 1, 12), 81, "Week 12", "11"),
    (date(2012, 4, 5), 22, "Week 24", "3"),
    (date(2012, 10, 18), 0, "Week 52", "0"),
]
INFUSIONS = ChartCourse(
    agent="UC-MSC infusion",
    started_on=BASELINE_DAY,
    ended_on=date(2011, 12, 15),
    doses=tuple(
        ChartDose(BASELINE_DAY + timedelta(weeks=weeks), 1e6, "cells/kg") for weeks in (0, 4, 8)
    ),
)


def scores(
    rows: Sequence[tuple[date, int, str | None, str | None]], *, baseline_on: date | None = None
) -> list[DatedScore]:
    recorded = datetime(2012, 11, 1, tzinfo=UTC)
    return [
        DatedScore(
            assessment_id=f"a{index}",
            assessed_on=day,
            recorded_at=recorded + timedelta(minutes=index),
            pasi_tenths=pasi,
            bsa_percent=None if bsa is None else Decimal(bsa),
            visit=visit,
            is_baseline=day == baseline_on,
        )
        for index, (day, pasi, visit, bsa) in enumerate(rows)
    ]


def outcomes_of(rows: Sequence[tuple[date, int, str | None, str | None]], **kw: date) -> Outcomes:
    result = compute_outcomes(scores(rows, **kw))
    assert result is not None
    return result


def example_chart(*, bsa: bool = True) -> CourseChart:
    rows = COURSE if bsa else [(d, p, v, None) for d, p, v, _ in COURSE]
    return CourseChart("MRN 0042", outcomes_of(rows), (INFUSIONS,))


def parse(svg: bytes) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def group(root: ET.Element, gid: str) -> ET.Element | None:
    return root.find(f".//{SVG}g[@id='{gid}']")


def markers(root: ET.Element, gid: str) -> list[ET.Element]:
    found = group(root, gid)
    return [] if found is None else list(found.iter(f"{SVG}use"))


def point_count(root: ET.Element) -> int:
    return sum(len(markers(root, gid)) for gid in POINT_GIDS)


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, chunk, width, height = struct.unpack(">I4sII", png[8:24])
    assert (length, chunk) == (13, b"IHDR")
    return width, height


@pytest.fixture(scope="module")
def example_svg() -> ET.Element:
    return parse(patient_course_svg(example_chart()))


# --------------------------------------------------------------------------- course chart


def test_course_svg_has_one_point_per_assessment(example_svg: ET.Element) -> None:
    assert point_count(example_svg) == len(COURSE)
    assert len(markers(example_svg, GID_BASELINE)) == 1
    assert len(markers(example_svg, GID_ASSESSMENTS)) == len(COURSE) - 1
    assert markers(example_svg, GID_BEFORE_BASELINE) == []


def test_course_svg_labels_visits_baseline_guides_agent_and_axis(example_svg: ET.Element) -> None:
    labels = texts(example_svg)
    for visit in ("Week 4", "Week 12", "Week 24", "Week 52"):
        assert visit in labels
    assert "Baseline (Week 0)" in labels
    # This patient's levels: 28.7 × 0.25 = 7.175 and 28.7 × 0.10 = 2.87, shown to 0.1.
    assert "PASI 75 (7.2)" in labels
    assert "PASI 90 (2.9)" in labels
    assert group(example_svg, "guide-pasi75") is not None
    assert group(example_svg, "guide-pasi90") is not None
    assert "UC-MSC infusion: 3 doses of 1×10⁶ cells/kg" in labels
    assert "PASI" in labels  # the y axis label
    assert "MRN 0042: PASI over time" in labels
    assert "Clearance (PASI 100) 2012-10-18" in labels


def test_course_svg_marks_each_dose_and_shades_the_course(example_svg: ET.Element) -> None:
    assert len(markers(example_svg, "doses-0")) == len(INFUSIONS.doses)
    assert group(example_svg, "course-0") is not None


def test_course_svg_has_an_accessible_title_and_description(example_svg: ET.Element) -> None:
    assert example_svg.get("role") == "img"
    title = example_svg.find(f"{SVG}title")
    desc = example_svg.find(f"{SVG}desc")
    assert title is not None
    assert title.text == "MRN 0042: PASI over time"
    assert desc is not None
    assert desc.text is not None
    assert "5 assessments from 2011-10-20 to 2012-10-18" in desc.text


def test_open_course_runs_to_the_last_date_on_the_chart() -> None:
    open_course = ChartCourse("UC-MSC infusion", BASELINE_DAY, None, INFUSIONS.doses)
    root = parse(patient_course_svg(CourseChart("P", outcomes_of(COURSE), (open_course,))))
    last_point_x = max(float(use.get("x", "nan")) for use in markers(root, GID_ASSESSMENTS))
    span = group(root, "course-0")
    assert span is not None
    path = span.find(f"{SVG}path")
    assert path is not None
    numbers = path.get("d", "").replace("M", " ").replace("L", " ").replace("z", " ").split()
    span_right = max(float(n) for n in numbers[0::2])
    assert span_right == pytest.approx(last_point_x, abs=0.01)
    assert "UC-MSC infusion: 3 doses of 1×10⁶ cells/kg (ongoing)" in texts(root)


def test_points_before_the_baseline_are_drawn_hollow() -> None:
    screening = (date(2011, 10, 6), 301, "Screening", None)
    outcomes = outcomes_of([screening, *COURSE], baseline_on=BASELINE_DAY)
    root = parse(patient_course_svg(CourseChart("P", outcomes)))
    before = markers(root, GID_BEFORE_BASELINE)
    assert len(before) == 1
    assert "fill: #ffffff" in before[0].get("style", "")
    assert "fill: #ffffff" not in markers(root, GID_ASSESSMENTS)[0].get("style", "")
    assert point_count(root) == len(COURSE) + 1
    assert "Screening" in texts(root)


def test_relapse_is_marked_with_a_line_and_its_date() -> None:
    rows = [
        (date(2019, 3, 4), 224, "Week 0", None),
        (date(2019, 4, 1), 90, "Week 4", None),
        (date(2019, 6, 24), 0, "Week 16", None),
        (date(2019, 11, 11), 150, "Week 36", None),
    ]
    outcomes = outcomes_of(rows)
    assert outcomes.relapse.relapsed_on == date(2019, 11, 11)
    root = parse(patient_course_svg(CourseChart("P", outcomes)))
    assert group(root, "relapse") is not None
    assert group(root, "clearance") is not None
    assert "Relapse 2019-11-11" in texts(root)
    assert "Clearance (PASI 100) 2019-06-24" in texts(root)


def test_baseline_pasi_zero_draws_no_guides_and_says_why() -> None:
    rows = [
        (date(2020, 1, 6), 0, "Week 0", None),
        (date(2020, 2, 3), 12, "Week 4", None),
    ]
    root = parse(patient_course_svg(CourseChart("P", outcomes_of(rows))))
    labels = texts(root)
    assert NOTE_NO_GUIDES in labels
    assert not any(label.startswith(("PASI 75", "PASI 90")) for label in labels)
    assert group(root, "guide-pasi75") is None
    assert group(root, "guide-pasi90") is None
    assert point_count(root) == 2


def test_bsa_panel_is_drawn_only_when_bsa_is_recorded(example_svg: ET.Element) -> None:
    assert "BSA %" in texts(example_svg)
    assert len(markers(example_svg, "bsa")) == len(COURSE)
    without = parse(patient_course_svg(example_chart(bsa=False)))
    assert "BSA %" not in texts(without)
    assert group(without, "bsa") is None
    assert point_count(without) == len(COURSE)


@pytest.mark.parametrize(
    ("width", "height"),
    [(DEFAULT_PNG_WIDTH, DEFAULT_PNG_HEIGHT), (1234, 777), (800, 1200)],
)
def test_png_decodes_to_the_requested_size(width: int, height: int) -> None:
    png = patient_course_png(example_chart(), width, height)
    assert png_size(png) == (width, height)


def test_png_defaults_to_1000_by_640() -> None:
    assert png_size(patient_course_png(example_chart())) == (1000, 640)


@pytest.mark.parametrize(("width", "height"), [(799, 640), (1000, 499), (4001, 1000)])
def test_png_size_out_of_range_is_refused(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="PNG size must be"):
        patient_course_png(example_chart(), width, height)


def test_no_assessment_gives_a_chart_that_says_so() -> None:
    chart = CourseChart("MRN 0042", None)
    root = parse(patient_course_svg(chart))
    assert MESSAGE_NO_ASSESSMENTS in texts(root)
    assert "PASI" in texts(root)
    assert point_count(root) == 0
    assert png_size(patient_course_png(chart)) == (DEFAULT_PNG_WIDTH, DEFAULT_PNG_HEIGHT)


def test_no_assessment_with_a_course_still_shades_it() -> None:
    root = parse(patient_course_svg(CourseChart("P", None, (INFUSIONS,))))
    assert MESSAGE_NO_ASSESSMENTS in texts(root)
    assert group(root, "course-0") is not None


def test_one_assessment_gives_a_chart_that_says_so() -> None:
    chart = CourseChart("MRN 0042", outcomes_of(COURSE[:1]))
    root = parse(patient_course_svg(chart))
    assert MESSAGE_ONE_ASSESSMENT in texts(root)
    assert point_count(root) == 1
    assert len(markers(root, GID_BASELINE)) == 1
    assert png_size(patient_course_png(chart)) == (DEFAULT_PNG_WIDTH, DEFAULT_PNG_HEIGHT)


def test_rendering_twice_gives_identical_bytes() -> None:
    chart = example_chart()
    assert patient_course_svg(chart) == patient_course_svg(chart)
    assert patient_course_png(chart) == patient_course_png(chart)
    svg = patient_course_svg(chart)
    assert b"<dc:date>" not in svg
    assert b"Matplotlib v" not in svg


def test_concurrent_renders_give_the_bytes_of_a_serial_render() -> None:
    chart = example_chart()
    expected = patient_course_svg(chart)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: patient_course_svg(chart), range(3)))
    assert results == [expected] * 3


def test_user_text_is_drawn_as_typed_and_cannot_inject_markup() -> None:
    rows = [
        (date(2020, 1, 6), 120, "Week $0$ <b>", None),
        (date(2020, 2, 3), 60, "第4週", None),  # glyphs DejaVu Sans lacks: no warning
    ]
    title = "<script>alert(1)</script> \x00\x1b $\\alpha$"
    course = ChartCourse("A & B <i>", date(2020, 1, 6))
    svg = patient_course_svg(CourseChart(title, outcomes_of(rows), (course,)))
    root = parse(svg)
    assert root.find(f".//{SVG}script") is None
    assert b"<script>" not in svg
    labels = texts(root)
    assert "<script>alert(1)</script> $\\alpha$: PASI over time" in labels
    assert "Baseline (Week $0$ <b>)" in labels
    assert "第4週" in labels
    assert "A & B <i> (ongoing)" in labels
    assert png_size(patient_course_png(CourseChart(title, outcomes_of(rows), (course,))))


# --------------------------------------------------------------------------- Kaplan–Meier


def km_example() -> KmChart:
    """Ten patients: events on days 14, 28 (two), 56, 84; censored on days 28, 70, 112 (two)."""
    return KmChart(
        event="clearance",
        n=10,
        median_days=56,
        steps=[
            KmStep(14, 10, 1, 0, 0.9, 0.5, 0.98),
            KmStep(28, 9, 2, 1, 0.7, 0.33, 0.89),
            KmStep(56, 6, 1, 0, 0.58333, 0.22, 0.82),
            KmStep(70, 5, 0, 1, 0.58333, 0.22, 0.82),
            KmStep(84, 4, 1, 0, 0.4375, 0.11, 0.73),
            KmStep(112, 3, 0, 3, 0.4375, 0.11, 0.73),
        ],
    )


def test_km_chart_shows_the_numbers_at_risk_under_the_axis() -> None:
    root = parse(km_curve_svg(km_example()))
    labels = texts(root)
    assert "At risk" in labels
    # Ticks every 14 days up to day 112; at risk = the first step on or after the tick.
    expected = {0: 10, 14: 10, 28: 9, 42: 6, 56: 6, 70: 5, 84: 4, 98: 3, 112: 3}
    for day, at_risk in expected.items():
        cell = group(root, f"at-risk-day-{day}")
        assert cell is not None, day
        assert [t.text for t in cell.iter(f"{SVG}text")] == [str(at_risk)]


def test_km_chart_draws_steps_band_censoring_and_titles_the_event() -> None:
    root = parse(km_curve_svg(km_example()))
    labels = texts(root)
    assert "Time to clearance" in labels
    assert "Days" in labels
    assert "Proportion without clearance" in labels
    assert "Median 56 days" in labels
    assert group(root, "km-survival") is not None
    assert group(root, "km-ci") is not None
    assert len(markers(root, "km-censored")) == 3  # days 28, 70 and 112


def test_km_chart_renders_identically_twice() -> None:
    assert km_curve_svg(km_example()) == km_curve_svg(km_example())


def test_km_chart_without_observations_says_so() -> None:
    root = parse(km_curve_svg(KmChart("relapse", [], 0, None)))
    assert MESSAGE_NO_OBSERVATIONS in texts(root)
    assert "Time to relapse" in texts(root)
    assert group(root, "km-survival") is None


# --------------------------------------------------------------------------- import and config


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = (
        "import sys, app.formats.charts; print('matplotlib' in sys.modules, 'numpy' in sys.modules)"
    )
    result = run_python(code, dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_renders_quietly_when_home_is_unwritable(tmp_path: Path) -> None:
    """No MPLCONFIGDIR and a home nobody can write (even root: it lies under a file)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"}
    }
    env.update(HOME=str(blocker / "home"), TMPDIR=str(temp))
    code = (
        "import os\n"
        "from app.formats.charts import CourseChart, patient_course_svg\n"
        "assert patient_course_svg(CourseChart('P', None)).startswith(b'<?xml')\n"
        "print(os.environ['MPLCONFIGDIR'])\n"
    )
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # matplotlib logs its fallback warnings to stderr
    config_dir = Path(result.stdout.strip())
    assert config_dir.parent == temp
    assert config_dir.stat().st_mode & 0o077 == 0
