"""Charts of a patient's course and of a cohort's Kaplan–Meier estimate (SPEC section 8).

Pure mappers: the inputs are the core's results (``app.scoring.outcomes``) and small frozen
dataclasses defined here; the outputs are SVG or PNG bytes. No I/O besides matplotlib's own
font cache, no clock.

Deterministic bytes
    The same input gives the same bytes, so tests and HTTP caches can compare them: the SVG
    has no date and a fixed ``svg.hashsalt`` (its clip-path ids are hashes), the PNG has no
    creation time, neither names the matplotlib version, and every render starts from
    matplotlib's built-in defaults (``rcdefaults``), so a ``matplotlibrc`` or a style set
    elsewhere in the process cannot change the output. ``svg.fonttype = 'none'`` keeps every
    label a real ``<text>`` element (searchable, accessible, small); math-text parsing is off,
    so a ``$`` in a visit label or an identifier is drawn as typed and never raises.

Lazy import
    matplotlib (and numpy) are imported on the first render, not with this module, so service
    start-up stays fast. Rendering uses the object-oriented API (``Figure`` with an Agg
    canvas), never pyplot and its global figure manager, and no global backend switch.

Why a lock
    matplotlib is not thread-safe (its documentation asks callers to serialise access), and
    the per-render settings above are applied with ``rc_context``, which mutates the
    process-global ``rcParams`` and restores them on exit: two concurrent renders would see
    each other's settings. Font and text-layout caches are shared as well. So every render
    (build and save) holds ``_RENDER_LOCK``; a render takes tens to a few hundred
    milliseconds. Callers in an async server should run these functions in a worker thread.

Configuration directory
    matplotlib needs a writable config/cache directory for its font cache; when the default
    one (under ``$HOME``) is not writable it logs a warning on import and uses a throwaway
    directory, rebuilding the font cache in every process. When ``MPLCONFIGDIR`` is unset and
    that default is unwritable (a service user without a home), ``_prepare_config_dir`` sets
    ``MPLCONFIGDIR`` to a private directory under the system temporary directory, once,
    before the first import; an ``MPLCONFIGDIR`` set by the operator is always respected.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from app.scoring.outcomes import ClearanceCriterion, Outcomes, SeriesPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

__all__ = [
    "DEFAULT_PNG_HEIGHT",
    "DEFAULT_PNG_WIDTH",
    "GID_ASSESSMENTS",
    "GID_BASELINE",
    "GID_BEFORE_BASELINE",
    "MESSAGE_NO_ASSESSMENTS",
    "MESSAGE_NO_OBSERVATIONS",
    "MESSAGE_ONE_ASSESSMENT",
    "NOTE_NO_GUIDES",
    "POINT_GIDS",
    "ChartCourse",
    "ChartDose",
    "CourseChart",
    "KmChart",
    "KmStep",
    "km_curve_svg",
    "patient_course_png",
    "patient_course_svg",
]

MESSAGE_NO_ASSESSMENTS = "No assessments recorded yet"
MESSAGE_ONE_ASSESSMENT = "Only one assessment: a course needs at least two"
MESSAGE_NO_OBSERVATIONS = "No observations in this cohort yet"
NOTE_NO_GUIDES = (
    "Baseline PASI is 0: no PASI 75 / PASI 90 guides (a relative response is undefined)"
)

GID_ASSESSMENTS = "assessments"
"""SVG group of the counting assessments after the baseline: one ``<use>`` per point."""
GID_BASELINE = "baseline"
"""SVG group of the baseline assessment (one ``<use>``)."""
GID_BEFORE_BASELINE = "assessments-before-baseline"
"""SVG group of the assessments before the baseline (hollow markers, one ``<use>`` each)."""
POINT_GIDS = (GID_BEFORE_BASELINE, GID_BASELINE, GID_ASSESSMENTS)
"""Together these groups hold exactly one marker per assessment of the PASI panel."""

_PANEL_SUFFIXES = ("", "-bsa")
"""Gid suffixes of the PASI and BSA panels, so that no two SVG elements share an id."""

DEFAULT_PNG_WIDTH = 1000
DEFAULT_PNG_HEIGHT = 640
PNG_MIN_PX = (800, 500)
PNG_MAX_PX = 4000
_BASE_DPI = 100.0
_SVG_SIZE_IN = (10.0, 6.4)
_MAX_VISIT_LABELS = 40
"""Beyond this many labelled points the labels would overlap; only the baseline's is kept."""

# Okabe–Ito colours (and Tol's red): distinguishable with common colour-vision deficiencies.
_BLUE = "#0072B2"
_VERMILLION = "#D55E00"
_GREEN = "#009E73"
_ORANGE = "#E69F00"
_REDDISH = "#CC3311"
_GREY = "#6E6E6E"
_TEXT = "#222222"
_COURSE_COLOURS = (("#56B4E9", "#1F6F9F"), ("#CC79A7", "#8E3F6C"), ("#F0E442", "#8A7F00"))

_CRITERION_LABELS = {
    ClearanceCriterion.PASI100: "PASI 100",
    ClearanceCriterion.PASI90: "PASI 90",
    ClearanceCriterion.PASI_LE_1: "PASI ≤ 1",
    ClearanceCriterion.PASI_LE_2: "PASI ≤ 2",
    ClearanceCriterion.IGA_0: "IGA 0",
}
_EVENT_PHRASES = {
    "clearance": "clearance",
    "relapse": "relapse",
    "pasi50": "PASI 50",
    "pasi75": "PASI 75",
    "pasi90": "PASI 90",
    "pasi100": "PASI 100",
}
_KM_TICK_STEPS = (1, 2, 5, 7, 14, 28, 56, 84, 112, 168, 182, 364, 728, 1456, 2912)
"""Day steps of the Kaplan–Meier x axis: weeks and multiples of 4 weeks, as visits are."""

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "psoriasis-scoring-charts",
    "text.parse_math": False,
    "text.usetex": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 9,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
}
_SVG_METADATA: dict[str, Any] = {"Date": None, "Creator": None}
_PNG_METADATA: dict[str, Any] = {"Software": None}

_RENDER_LOCK = threading.Lock()
_CONFIG_LOCK = threading.Lock()
_config_prepared = False

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_WHITESPACE = re.compile(r"\s+")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class ChartDose:
    """A dose mark on a course span: its date, amount and unit (e.g. 1e6 cells/kg)."""

    given_on: date
    amount: float
    unit: str


@dataclass(frozen=True, slots=True)
class ChartCourse:
    """A treatment course to shade; an open course (no ``ended_on``) runs to the chart's end."""

    agent: str
    started_on: date
    ended_on: date | None = None
    doses: tuple[ChartDose, ...] = ()


@dataclass(frozen=True, slots=True)
class CourseChart:
    """Everything the course chart shows: ``outcomes`` is None when there is no assessment."""

    title: str
    outcomes: Outcomes | None
    courses: tuple[ChartCourse, ...] = ()


@dataclass(frozen=True, slots=True)
class KmStep:
    """One row of the Kaplan–Meier table: ``at_risk`` just before ``day``'s events."""

    day: int
    at_risk: int
    events: int
    censored: int
    survival: float
    ci_lower: float | None
    ci_upper: float | None


@dataclass(frozen=True, slots=True)
class KmChart:
    """A Kaplan–Meier estimate of time to ``event`` over ``n`` patients."""

    event: str
    steps: Sequence[KmStep]
    n: int
    median_days: int | None


# --------------------------------------------------------------------------- public API


def patient_course_svg(chart: CourseChart) -> bytes:
    """The patient's PASI course as SVG (SPEC section 8): scalable, labels as ``<text>``."""
    with _session():
        fig = _new_figure(*_SVG_SIZE_IN, dpi=_BASE_DPI)
        title, description = _draw_course(fig, chart)
        return _svg_bytes(fig, title, description)


def patient_course_png(
    chart: CourseChart, width_px: int = DEFAULT_PNG_WIDTH, height_px: int = DEFAULT_PNG_HEIGHT
) -> bytes:
    """The same chart as a PNG of exactly ``width_px`` × ``height_px`` pixels.

    The layout is the SVG's (10 × 6.4 in) scaled to fit, so text keeps its proportion: the
    resolution is set by the smaller of the two scales and the other dimension gets more room
    (a wide PNG is a longer time axis, not larger text). Raises ``ValueError`` outside
    800×500 to 4000×4000: smaller, the labels would be under 9 px and collide.
    """
    _check_png_size(width_px, height_px)
    dpi = min(width_px / _SVG_SIZE_IN[0], height_px / _SVG_SIZE_IN[1])
    with _session():
        # +0.5 px: Agg truncates figsize*dpi to an int, which float error could shave by one.
        fig = _new_figure((width_px + 0.5) / dpi, (height_px + 0.5) / dpi, dpi=dpi)
        _draw_course(fig, chart)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, metadata=_PNG_METADATA)
        return buffer.getvalue()


def km_curve_svg(curve: KmChart) -> bytes:
    """The Kaplan–Meier curve as SVG: steps, 95 % band, censoring marks, numbers at risk."""
    with _session():
        fig = _new_figure(*_SVG_SIZE_IN, dpi=_BASE_DPI)
        title, description = _draw_km(fig, curve)
        return _svg_bytes(fig, title, description)


# --------------------------------------------------------------------------- matplotlib


def _prepare_config_dir() -> None:
    """Point ``MPLCONFIGDIR`` at a private temporary directory if the default is unwritable.

    Only when ``MPLCONFIGDIR`` is unset, and only once per process, before matplotlib is
    imported (it reads the variable on import). See the module docstring for why.
    """
    global _config_prepared
    with _CONFIG_LOCK:
        if _config_prepared:
            return
        _config_prepared = True
        if os.environ.get("MPLCONFIGDIR") or "matplotlib" in sys.modules:
            return
        defaults = _default_config_dirs()
        if defaults is not None and all(_writable_dir(path) for path in defaults):
            return
        fallback = _private_temp_dir()
        if fallback is not None:
            os.environ["MPLCONFIGDIR"] = fallback


def _default_config_dirs() -> list[Path] | None:
    """matplotlib's default config and cache directories (None if home cannot be found)."""
    if sys.platform == "win32":
        return []  # %LOCALAPPDATA%: left to matplotlib
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return None
    if not sys.platform.startswith(("linux", "freebsd")):
        return [home / ".matplotlib"]
    config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    cache = os.environ.get("XDG_CACHE_HOME") or str(home / ".cache")
    return [Path(config, "matplotlib"), Path(cache, "matplotlib")]


def _writable_dir(path: Path) -> bool:
    """Whether matplotlib could use ``path`` (it creates it, as matplotlib would)."""
    try:
        path = path.resolve()
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return path.is_dir() and os.access(path, os.W_OK)


def _private_temp_dir() -> str | None:
    """A per-user directory under the temp dir, kept across processes (so the font cache is
    built once), refused if someone else owns it or may write to it; else a fresh one."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    stable = Path(tempfile.gettempdir(), f"psoriasis-scoring-matplotlib-{uid or 'user'}")
    try:
        stable.mkdir(mode=0o700, exist_ok=True)
        info = stable.lstat()
        if (
            stable.is_dir()
            and not stable.is_symlink()
            and (uid is None or info.st_uid == uid)
            and not info.st_mode & 0o022
            and os.access(stable, os.W_OK)
        ):
            return str(stable)
    except OSError:
        pass
    try:
        return tempfile.mkdtemp(prefix="psoriasis-scoring-matplotlib-")
    except OSError:
        return None  # matplotlib will try on its own and say why


@contextmanager
def _session() -> Iterator[None]:
    """Serialised render with matplotlib's built-in defaults plus ``_RC``, restored after."""
    _prepare_config_dir()
    import matplotlib

    # rc_context and catch_warnings both change process-global state: hence the lock.
    with _RENDER_LOCK, matplotlib.rc_context(), warnings.catch_warnings():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        # A label in a script DejaVu Sans lacks (e.g. CJK) is drawn as boxes in the PNG; the
        # SVG keeps the real text for the browser's fonts. Not worth a warning per request.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        yield


def _new_figure(width_in: float, height_in: float, dpi: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    layout = ConstrainedLayoutEngine(h_pad=0.06, w_pad=0.08)
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _svg_bytes(fig: Figure, title: str, description: str) -> bytes:
    """Save as SVG and give it an accessible ``<title>`` and ``<desc>`` (and ``role="img"``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={**_SVG_METADATA, "Title": title})
    svg = buffer.getvalue()
    start = svg.index(b"<svg ")
    end = svg.index(b">", start) + 1
    root = svg[start:end].replace(
        b"<svg ", b'<svg role="img" aria-labelledby="chart-title chart-desc" ', 1
    )
    accessible = (
        f'\n <title id="chart-title">{escape(title)}</title>'
        f'\n <desc id="chart-desc">{escape(description)}</desc>'
    ).encode()
    return svg[:start] + root + accessible + svg[end:]


def _check_png_size(width_px: int, height_px: int) -> None:
    min_width, min_height = PNG_MIN_PX
    if not (min_width <= width_px <= PNG_MAX_PX and min_height <= height_px <= PNG_MAX_PX):
        raise ValueError(
            f"PNG size must be from {min_width}×{min_height} to {PNG_MAX_PX}×{PNG_MAX_PX} "
            f"pixels, not {width_px}×{height_px}"
        )


# --------------------------------------------------------------------------- text helpers


def _clean(text: str, limit: int = 48) -> str:
    """User text made safe to draw: no control or XML-invalid characters, one line, bounded."""
    text = _WHITESPACE.sub(" ", _XML_INVALID.sub("", text)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _pasi(tenths: int) -> str:
    return f"{tenths // 10}.{tenths % 10}"


def _level_label(baseline_tenths: int, fraction_percent: int) -> str:
    """``baseline × fraction`` in PASI, to 0.1 (ROUND_HALF_UP, as percent improvement)."""
    level = Decimal(baseline_tenths * fraction_percent) / 1000
    return str(level.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _amount(amount: float) -> str:
    """Doses as clinicians write them: 1e6 -> '1×10⁶', 2.5e6 -> '2.5×10⁶', 40.0 -> '40'."""
    text = f"{amount:.4g}"
    if "e" not in text:  # also 'nan' and 'inf', drawn as they are
        return text
    mantissa, exponent = f"{amount:.3g}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPTS)}"


def _course_label(course: ChartCourse) -> str:
    agent = _clean(course.agent) or "Treatment"
    doses = course.doses
    if not doses:
        return agent
    if len({(d.amount, d.unit) for d in doses}) == 1:
        each = f"{_amount(doses[0].amount)} {_clean(doses[0].unit, 24)}".rstrip()
        plural = "dose" if len(doses) == 1 else "doses"
        return f"{agent}: {len(doses)} {plural} of {each}"
    return f"{agent}: {len(doses)} doses"


def _shift(day: date, days: int) -> date:
    """``day + days``, clamped to the dates Python can represent (no OverflowError)."""
    ordinal = min(max(day.toordinal() + days, 1), date.max.toordinal())
    return date.fromordinal(ordinal)


def _date_num(day: date) -> float:
    from matplotlib import dates as mdates

    midnight = datetime.combine(day, time(), tzinfo=UTC)
    return float(mdates.date2num(midnight))  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------- course chart


def _draw_course(fig: Figure, chart: CourseChart) -> tuple[str, str]:
    """Draw the PASI course (and BSA panel) on ``fig``; return (title, description)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    outcomes = chart.outcomes
    series = outcomes.series if outcomes is not None else []
    has_bsa = any(point.bsa_percent is not None for point in series)
    if has_bsa:
        grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
        ax = fig.add_subplot(grid[0])
        ax_bsa: Axes | None = fig.add_subplot(grid[1], sharex=ax)
        ax.tick_params(labelbottom=False)
    else:
        ax = fig.add_subplot()
        ax_bsa = None
    panels = [ax] if ax_bsa is None else [ax, ax_bsa]

    subject = _clean(chart.title, 80)
    title = f"{subject}: PASI over time" if subject else "PASI over time"
    fig.suptitle(title, x=0.01, ha="left", fontsize=13, weight="bold")

    dates = [point.assessed_on for point in series]
    for course in chart.courses:
        dates.append(course.started_on)
        dates.extend(d for d in (course.ended_on,) if d is not None)
        dates.extend(dose.given_on for dose in course.doses)
    if dates:
        first, last = min(dates), max(dates)
        pad = max(7, round((last - first).days * 0.04))
        ax.set_xlim(_date_num(_shift(first, -pad)), _date_num(_shift(last, pad)))
        locator = AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        formatter = ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(formatter)
    else:
        last = date.min  # no course either: nothing uses it
        for panel in panels:
            panel.set_xticks([])

    top = max((p.pasi_tenths for p in series), default=0) / 10
    ax.set_ylim(0, max(top * 1.25, 5.0))
    ax.set_ylabel("PASI")
    ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)

    legend: list[Any] = []
    for index, course in enumerate(chart.courses):
        legend += _draw_course_span(panels, index, course, last)
    if outcomes is not None:
        ax.set_title(_summary(outcomes), loc="left", color=_GREY)
        if outcomes.baseline.pasi_tenths > 0:
            _draw_guides(ax, outcomes.baseline.pasi_tenths)
        else:
            _message(ax, NOTE_NO_GUIDES, y=0.9, size=9)
        if series:
            legend = _draw_points(ax, series) + legend
        _draw_events(panels, outcomes)
        if ax_bsa is not None:
            _draw_bsa(ax_bsa, series)
    if ax_bsa is not None:
        ax_bsa.set_xlabel("Assessment date")
    else:
        ax.set_xlabel("Assessment date")

    if not series:
        _message(ax, MESSAGE_NO_ASSESSMENTS)
    elif len(series) == 1:
        _message(ax, MESSAGE_ONE_ASSESSMENT, y=0.35)
    if legend:
        fig.legend(handles=legend, loc="outside lower center", ncols=min(len(legend), 4))
    return title, _course_description(title, outcomes, chart.courses)


def _summary(outcomes: Outcomes) -> str:
    baseline, latest = outcomes.baseline, outcomes.latest
    text = f"Baseline PASI {_pasi(baseline.pasi_tenths)} ({baseline.assessed_on.isoformat()})"
    if latest.assessment_id != baseline.assessment_id:
        text += f"   ·   latest PASI {_pasi(latest.pasi_tenths)} ({latest.assessed_on.isoformat()})"
        improvement = outcomes.change.percent_improvement
        if improvement is not None:
            change = "improvement" if improvement >= 0 else "worsening"
            text += f", {abs(improvement)} % {change}"
    if outcomes.anchor == "treatment":
        text += f"   ·   anchored on the treatment started {outcomes.anchor_on.isoformat()}"
    return text


def _draw_points(ax: Axes, series: Sequence[SeriesPoint]) -> list[Any]:
    """The PASI line, one marker per assessment (three gid groups), the visit labels."""
    from matplotlib.lines import Line2D

    base = next((i for i, point in enumerate(series) if point.counts), 0)
    xs = [_date_num(point.assessed_on) for point in series]
    ys = [point.pasi_tenths / 10 for point in series]
    handles: list[Any] = []

    if base > 0:
        ax.plot(xs[: base + 1], ys[: base + 1], color=_GREY, lw=1.2, ls="--", zorder=3)
    ax.plot(xs[base:], ys[base:], color=_BLUE, lw=1.8, zorder=3)

    if base + 1 < len(series):  # an empty unclipped line would stretch the layout to (0, 0)
        (line,) = ax.plot(
            xs[base + 1 :],
            ys[base + 1 :],
            ls="none",
            marker="o",
            ms=6.5,
            color=_BLUE,
            zorder=5,
            clip_on=False,
        )
        line.set_gid(GID_ASSESSMENTS)
        handles.append(Line2D([], [], ls="-", marker="o", color=_BLUE, label="Assessment (PASI)"))
    if base > 0:
        (line,) = ax.plot(
            xs[:base],
            ys[:base],
            ls="none",
            marker="o",
            ms=6.5,
            mfc="white",
            mec=_GREY,
            mew=1.5,
            clip_on=False,
            zorder=5,
        )
        line.set_gid(GID_BEFORE_BASELINE)
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="o",
                mfc="white",
                mec=_GREY,
                mew=1.5,
                label="Before baseline (not counted)",
            )
        )
    (line,) = ax.plot(
        [xs[base]],
        [ys[base]],
        ls="none",
        marker="D",
        ms=9,
        color=_VERMILLION,
        mec="white",
        mew=1.0,
        clip_on=False,
        zorder=6,
    )
    line.set_gid(GID_BASELINE)
    handles.append(
        Line2D([], [], ls="none", marker="D", color=_VERMILLION, mec="white", label="Baseline")
    )

    labelled = sum(1 for point in series if point.visit and _clean(point.visit))
    for index, point in enumerate(series):
        visit = _clean(point.visit or "", 24)
        if index == base:
            text = f"Baseline ({visit})" if visit else "Baseline"
            style: dict[str, Any] = {"fontsize": 8.5, "weight": "bold", "color": _VERMILLION}
        elif visit and labelled <= _MAX_VISIT_LABELS:
            text = visit
            style = {"fontsize": 8, "color": _TEXT if point.counts else _GREY}
        else:
            continue
        before = ys[index - 1] if index > 0 else None
        after = ys[index + 1] if index + 1 < len(ys) else None
        dx, ha = _label_side(before, ys[index], after)
        ax.annotate(
            text,
            (xs[index], ys[index]),
            xytext=(dx, 6),
            textcoords="offset points",
            ha=ha,
            va="bottom",
            zorder=7,
            bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.75},
            **style,
        )
    if labelled > _MAX_VISIT_LABELS:
        _message(ax, f"Visit labels omitted: {labelled} labelled assessments", y=0.97, size=8)
    return handles


def _label_side(before: float | None, y: float, after: float | None) -> tuple[float, str]:
    """Where a point's label avoids the line: upper right on a fall (the line arrives from
    the upper left and leaves to the lower right), upper left on a rise, centred above a
    peak, a trough, a plateau or a first point on a rise. Returns (x offset in points,
    horizontal alignment)."""
    if before is None and after is None:
        return 0, "center"
    if (before is None or before > y) and (after is None or after < y):
        return 5, "left"
    if before is not None and before < y and (after is None or after > y):
        return -5, "right"  # (not for the first point: its upper left is the y axis)
    return 0, "center"


def _draw_guides(ax: Axes, baseline_tenths: int) -> None:
    """Dashed guides at this patient's PASI 75 and PASI 90 levels (baseline × 0.25, × 0.10)."""
    for name, remaining, colour in (("PASI 75", 25, _ORANGE), ("PASI 90", 10, _GREEN)):
        level = baseline_tenths * remaining / 1000
        line = ax.axhline(level, color=colour, lw=1.2, ls="--", zorder=2)
        line.set_gid(f"guide-{name.replace(' ', '').lower()}")
        ax.text(
            0.006,
            level,
            f"{name} ({_level_label(baseline_tenths, remaining)})",
            transform=ax.get_yaxis_transform(),
            ha="left",
            va="bottom",
            fontsize=8,
            color=colour,
            weight="bold",
            zorder=7,
        )


def _draw_course_span(
    panels: Sequence[Axes], index: int, course: ChartCourse, last: date
) -> list[Any]:
    """A shaded span per panel, the agent's label and the dose marks; its legend handles."""
    from matplotlib.lines import Line2D

    fill, dark = _COURSE_COLOURS[index % len(_COURSE_COLOURS)]
    start = course.started_on
    end = course.ended_on or max(last, start)
    x0 = _date_num(start)
    x1 = max(_date_num(end), x0 + 1.0)  # a one-day course stays visible
    for panel, suffix in zip(panels, _PANEL_SUFFIXES, strict=False):
        span = panel.axvspan(x0, x1, color=fill, alpha=0.18, lw=0, zorder=0)
        span.set_gid(f"course-{index}{suffix}")
    ax = panels[0]
    label = _course_label(course) + ("" if course.ended_on else " (ongoing)")
    left, right = ax.get_xlim()
    late = x0 > (left + right) / 2  # a late course's label ends at its end, inside the axes
    ax.text(
        x1 if late else x0,
        0.985 - 0.055 * (index % 4),
        label,
        transform=ax.get_xaxis_transform(),
        ha="right" if late else "left",
        va="top",
        fontsize=8.5,
        color=dark,
        weight="bold",
        zorder=7,
    )
    handles: list[Any] = []
    if course.doses:
        xs = [_date_num(dose.given_on) for dose in course.doses]
        (marks,) = ax.plot(
            xs,
            [0.0] * len(xs),
            ls="none",
            marker="^",
            ms=7,
            color=dark,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            zorder=6,
        )
        marks.set_gid(f"doses-{index}")
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="^",
                color=dark,
                label=f"Dose ({_clean(course.agent, 24)})",
            )
        )
    return handles


def _draw_events(panels: Sequence[Axes], outcomes: Outcomes) -> None:
    """Vertical lines at clearance and relapse (and rebound), labelled in the PASI panel."""
    marks: list[tuple[date, str, str, str, str]] = []
    clearance = outcomes.clearance
    if clearance.cleared_on is not None:
        criterion = _CRITERION_LABELS.get(clearance.criterion, str(clearance.criterion))
        marks.append((clearance.cleared_on, f"Clearance ({criterion})", _GREEN, "-", "clearance"))
    if outcomes.relapse.relapsed_on is not None:
        marks.append((outcomes.relapse.relapsed_on, "Relapse", _REDDISH, "-.", "relapse"))
    if outcomes.rebound is not None and outcomes.rebound.rebound_on is not None:
        marks.append((outcomes.rebound.rebound_on, "Rebound", _REDDISH, ":", "rebound"))
    pasi_on = {point.assessed_on: point.pasi_tenths / 10 for point in outcomes.series}
    top = panels[0].get_ylim()[1]
    for day, label, colour, style, gid in marks:
        x = _date_num(day)
        for panel, suffix in zip(panels, _PANEL_SUFFIXES, strict=False):
            panel.axvline(x, color=colour, lw=1.4, ls=style, zorder=4).set_gid(gid + suffix)
        # The label runs along the line, in the half of the panel away from that day's point.
        high = pasi_on.get(day, 0.0) / top > 0.5
        panels[0].text(
            x,
            0.3 if high else 0.68,
            f"{label} {day.isoformat()}",
            transform=panels[0].get_xaxis_transform(),
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
            color=colour,
            weight="bold",
            zorder=7,
        )


def _draw_bsa(ax: Axes, series: Sequence[SeriesPoint]) -> None:
    """BSA % per assessment that records it; hollow before the baseline, as above."""
    points = [p for p in series if p.bsa_percent is not None]
    xs = [_date_num(p.assessed_on) for p in points]
    ys = [float(p.bsa_percent or 0) for p in points]
    ax.plot(xs, ys, color=_GREY, lw=1.2, zorder=3)
    counting = [(x, y) for x, y, p in zip(xs, ys, points, strict=True) if p.counts]
    before = [(x, y) for x, y, p in zip(xs, ys, points, strict=True) if not p.counts]
    if counting:
        (line,) = ax.plot(
            *zip(*counting, strict=True), ls="none", marker="s", ms=5, color=_GREY, clip_on=False
        )
        line.set_gid("bsa")
    if before:
        (line,) = ax.plot(
            *zip(*before, strict=True),
            ls="none",
            marker="s",
            ms=5,
            mfc="white",
            mec=_GREY,
            clip_on=False,
        )
        line.set_gid("bsa-before-baseline")
    ax.set_ylim(0, min(105.0, max(max(ys) * 1.25, 1.0)))
    ax.set_ylabel("BSA %")
    ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)


def _message(ax: Axes, text: str, y: float = 0.5, size: float = 12) -> None:
    ax.text(
        0.5,
        y,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=size,
        color=_TEXT,
        zorder=8,
        bbox={"boxstyle": "round,pad=0.5", "facecolor": "white", "edgecolor": "#BBBBBB"},
    )


def _course_description(
    title: str, outcomes: Outcomes | None, courses: Sequence[ChartCourse]
) -> str:
    if outcomes is None:
        return f"{title}: {MESSAGE_NO_ASSESSMENTS.lower()}."
    series = outcomes.series
    parts = [
        f"{title}: {len(series)} assessment"
        f"{'s' if len(series) != 1 else ''} from {series[0].assessed_on.isoformat()} "
        f"to {series[-1].assessed_on.isoformat()}.",
        _summary(outcomes).replace("   ·   ", "; ") + ".",
    ]
    if outcomes.clearance.cleared_on is not None:
        parts.append(f"Clearance on {outcomes.clearance.cleared_on.isoformat()}.")
    if outcomes.relapse.relapsed_on is not None:
        parts.append(f"Relapse on {outcomes.relapse.relapsed_on.isoformat()}.")
    parts.extend(f"Treatment: {_course_label(course)}." for course in courses)
    return " ".join(parts)


# --------------------------------------------------------------------------- Kaplan–Meier


def _tick_step(max_day: int) -> int:
    return next((step for step in _KM_TICK_STEPS if max_day / step <= 10), _KM_TICK_STEPS[-1])


def _at_risk(steps: Sequence[KmStep], day: int) -> int:
    """Patients still at risk at ``day``: those of the first step on or after it."""
    return next((step.at_risk for step in steps if step.day >= day), 0)


def _draw_km(fig: Figure, curve: KmChart) -> tuple[str, str]:
    """Draw the curve and its at-risk row on ``fig``; return (title, description)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    event = _clean(curve.event, 40)
    phrase = _EVENT_PHRASES.get(curve.event, event)
    title = f"Time to {phrase}"
    steps = sorted(curve.steps, key=lambda step: step.day)
    grid = fig.add_gridspec(2, 1, height_ratios=(5, 0.7))
    ax = fig.add_subplot(grid[0])
    ax_risk = fig.add_subplot(grid[1], sharex=ax)
    fig.suptitle(title, x=0.01, ha="left", fontsize=13, weight="bold")
    ax.set_ylim(0, 1.02)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel(f"Proportion without {phrase}")
    ax.set_xlabel("Days")
    ax.grid(color="#E3E3E3", linewidth=0.6)
    ax.set_axisbelow(True)
    ax_risk.set_axis_off()
    ax_risk.set_ylim(0, 1)
    ax_risk.annotate(
        "At risk",
        (0, 0.5),
        xycoords="axes fraction",
        xytext=(-16, 0),
        textcoords="offset points",
        ha="right",
        va="center",
        fontsize=9,
        weight="bold",
    )

    if curve.n <= 0 or not steps:
        ax.set_xlim(0, 28)
        ax.set_xticks(range(0, 29, 7))
        _message(ax, MESSAGE_NO_OBSERVATIONS)
        ax.set_title(f"Kaplan–Meier estimate   ·   n = {max(curve.n, 0)}", loc="left", color=_GREY)
        return title, f"{title}: {MESSAGE_NO_OBSERVATIONS.lower()}."

    events = sum(step.events for step in steps)
    censored = sum(step.censored for step in steps)
    median = curve.median_days
    median_text = f"median {median} days" if median is not None else "median not reached"
    ax.set_title(
        f"Kaplan–Meier estimate with 95 % confidence band   ·   n = {curve.n}   ·   "
        f"{events} events   ·   {censored} censored   ·   {median_text}",
        loc="left",
        color=_GREY,
    )

    nan = float("nan")
    xs = [0.0] + [float(step.day) for step in steps]
    ys = [1.0] + [step.survival for step in steps]
    lower = [1.0] + [nan if step.ci_lower is None else step.ci_lower for step in steps]
    upper = [1.0] + [nan if step.ci_upper is None else step.ci_upper for step in steps]
    band = ax.fill_between(xs, lower, upper, step="post", color=_BLUE, alpha=0.18, lw=0)
    band.set_gid("km-ci")
    for line in ax.step(xs, ys, where="post", color=_BLUE, lw=2, zorder=4):
        line.set_gid("km-survival")
    marks = [(float(step.day), step.survival) for step in steps if step.censored > 0]
    if marks:
        (line,) = ax.plot(
            *zip(*marks, strict=True),
            ls="none",
            marker="+",
            ms=9,
            mew=1.4,
            color=_TEXT,
            zorder=5,
        )
        line.set_gid("km-censored")
    if median is not None:
        (line,) = ax.plot([0, median, median], [0.5, 0.5, 0], color=_GREY, lw=1, ls=":")
        line.set_gid("km-median")
        ax.annotate(
            f"Median {median} days",
            (median, 0),
            xytext=(4, 4),
            textcoords="offset points",
            va="bottom",
            fontsize=8.5,
            color=_GREY,
        )

    max_day = max(steps[-1].day, 1)
    step_days = _tick_step(max_day)
    ticks = list(range(0, max_day + 1, step_days))
    ax.set_xlim(0, max_day * 1.02)
    ax.set_xticks(ticks)
    for day in ticks:
        text = ax_risk.text(
            day, 0.5, str(_at_risk(steps, day)), ha="center", va="center", fontsize=9
        )
        text.set_gid(f"at-risk-day-{day}")

    legend = [
        Line2D([], [], color=_BLUE, lw=2, label="Kaplan–Meier estimate"),
        Patch(color=_BLUE, alpha=0.18, label="95 % confidence band"),
    ]
    if marks:
        legend.append(Line2D([], [], ls="none", marker="+", ms=9, color=_TEXT, label="Censored"))
    fig.legend(handles=legend, loc="outside lower center", ncols=len(legend))
    description = (
        f"{title}, Kaplan–Meier estimate over {curve.n} patients: {events} events, "
        f"{censored} censored, {median_text}. At risk: "
        + ", ".join(f"day {day}: {_at_risk(steps, day)}" for day in ticks)
        + "."
    )
    return title, description
