"""Shared helpers for the benchmarks and drills: servers, databases, seeding, RSS, percentiles.

Everything talks to 127.0.0.1 only. Servers are real uvicorn processes started the way
production runs them (uvloop + httptools), via `tests.live.LiveServer` for the service and
`UvicornProcess` for the bare comparison app.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"

if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the project, on sys.path
    sys.path.insert(0, str(ROOT))

from app.schemas.scores import PASI_EXAMPLE  # noqa: E402
from tests.dbs import empty_database, migrate  # noqa: E402
from tests.live import LiveServer, UvicornProcess  # noqa: E402

BACKENDS = ("sqlite", "postgresql")

#: The body of POST /v1/scores/pasi (and of the bare endpoint: same bytes).
SCORE_BODY: dict[str, Any] = {"pasi": PASI_EXAMPLE, "iga": 4}

# A course of PASI inputs: severe baseline, response, clearance, relapse. Cycled by the seeders so
# that outcomes have something to compute (responses, clearance, relapse, episodes).
_SEVERITIES: tuple[tuple[int, int], ...] = (
    (3, 40),
    (3, 30),
    (2, 20),
    (2, 10),
    (1, 5),
    (1, 2),
    (0, 0),
    (0, 0),
    (1, 3),
    (2, 15),
    (3, 35),
    (2, 12),
)


def pasi_inputs(step: int) -> dict[str, Any]:
    """PASI region inputs for the `step`-th assessment of a synthetic course."""
    sign, area = _SEVERITIES[step % len(_SEVERITIES)]
    region = {"erythema": sign, "induration": sign, "desquamation": sign, "area_percent": area}
    return {r: dict(region) for r in ("head_neck", "upper_limbs", "trunk", "lower_limbs")}


def assessment_body(step: int, *, start: date = date(1990, 1, 1), **extra: Any) -> dict[str, Any]:
    """A valid POST /v1/patients/{id}/assessments body; one day apart per step."""
    body: dict[str, Any] = {
        "assessed_on": (start + timedelta(days=step)).isoformat(),
        "visit": f"Visit {step}",
        "pasi": pasi_inputs(step),
        "iga": min(4, _SEVERITIES[step % len(_SEVERITIES)][0] + 1),
    }
    body.update(extra)
    return body


# --------------------------------------------------------------------------- machine facts


def machine_facts() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def timed_median(fn: Any, *, repeats: int, budget_s: float) -> tuple[float, list[float]]:
    """Run `fn` up to `repeats` times (at least 3, at most `budget_s` seconds after the third);
    return the median duration in seconds and all samples."""
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(max(3, repeats)):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() > deadline:
            break
    return percentile(samples, 50), samples


# --------------------------------------------------------------------------- databases & servers


@contextmanager
def migrated_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """A new database (SQLite file or PostgreSQL database) migrated to head; dropped after."""
    with empty_database(backend, tmp_dir) as url:
        migrate(url)
        yield url


@contextmanager
def work_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def service(
    database_url: str,
    data_dir: Path,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LiveServer]:
    """The real service (uvicorn, uvloop, httptools) on a free loopback port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = LiveServer(database_url, data_dir, workers=workers, extra_env=extra_env)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def bare_server(log_dir: Path, *, workers: int = 1) -> Iterator[UvicornProcess]:
    proc = UvicornProcess("bench.bare_app:create_app", log_dir / "bare.log", workers=workers)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- API seeding


def api_client(server: LiveServer, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=timeout,
    )


def create_patient(client: httpx.Client, label: str = "bench") -> str:
    body = {
        "identifiers": [
            {"system": "https://bench.example/subject", "value": f"{label}-{uuid.uuid4().hex}"}
        ]
    }
    r = client.post("/v1/patients", json=body)
    if r.status_code != 201:
        raise RuntimeError(f"creating a patient: {r.status_code} {r.text[:300]}")
    return str(r.json()["id"])


def post_assessments(client: httpx.Client, patient_id: str, count: int) -> list[str]:
    ids = []
    for step in range(count):
        r = client.post(f"/v1/patients/{patient_id}/assessments", json=assessment_body(step))
        if r.status_code != 201:
            raise RuntimeError(f"recording an assessment: {r.status_code} {r.text[:300]}")
        ids.append(str(r.json()["id"]))
    return ids


def bulk_assessments(
    database_url: str,
    patient_id: str,
    count: int,
    *,
    recorded_by: str = "bench-seed",
    batch: int = 500,
) -> None:
    """Store `count` assessments for a patient through the service layer (the same code path as
    POST, minus HTTP, audit and idempotency), `batch` per transaction."""
    from app.auth.access import Access
    from app.auth.keys import ALL_SCOPES
    from app.db.database import Database
    from app.schemas.records import AssessmentIn
    from app.services import assessments as service

    db = Database(database_url)
    seeder = Access(None, recorded_by, ALL_SCOPES)  # spans every organization, as admin does
    try:
        pid = uuid.UUID(patient_id)
        done = 0
        while done < count:
            with db.transaction() as session:
                for step in range(done, min(count, done + batch)):
                    body = AssessmentIn.model_validate(assessment_body(step))
                    service.create_assessment(session, seeder, pid, body)
            done = min(count, done + batch)
    finally:
        db.dispose()


# --------------------------------------------------------------------------- processes & memory


def descendants(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    found = [pid]
    queue = [pid]
    while queue:
        current = queue.pop()
        task_dir = Path(f"/proc/{current}/task")
        try:
            tasks = list(task_dir.iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                child_pid = int(child)
                if child_pid not in found:
                    found.append(child_pid)
                    queue.append(child_pid)
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree_rss(pid: int) -> dict[int, int]:
    return {p: rss_kib(p) for p in descendants(pid)}


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds consumed so far by these processes (gone ones count 0).

    CPU time per request is far less sensitive than wall time to other load on a shared
    machine, so the benchmarks report it next to requests/s."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLOCK_TICKS


class PgBackendCpu:
    """CPU used by the PostgreSQL backends of one database while a measurement runs.

    Backends come and go (a pool's overflow connections are closed on return), so a thread
    samples pg_stat_activity and /proc every `period` seconds over ONE connection of its own
    and keeps each backend's last-seen CPU time; a backend that lives less than a period is
    missed, so the figure is a lower bound. `backends` counts the distinct backends seen.
    Does nothing for SQLite."""

    def __init__(self, database_url: str | None, period: float = 0.1) -> None:
        self.period = period
        self.conninfo: str | None = None
        if database_url:
            from sqlalchemy.engine import make_url

            url = make_url(database_url)
            if url.get_backend_name() == "postgresql":
                self.conninfo = url.set(drivername="postgresql").render_as_string(
                    hide_password=False
                )
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.conninfo is not None

    def __enter__(self) -> PgBackendCpu:
        if self.conninfo is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
            while not self._first and self._thread.is_alive() and not self._stop.is_set():
                time.sleep(0.01)  # the first sample is the baseline of existing backends
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        import psycopg

        assert self.conninfo is not None
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            first = True
            while True:
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
                for (pid,) in rows:
                    used = cpu_seconds([int(pid)])
                    # a backend born during the run started from 0 CPU seconds
                    self._first.setdefault(int(pid), used if first else 0.0)
                    self._last[int(pid)] = used
                first = False
                if not self._first:
                    self._first[-1] = 0.0  # no backend yet: still release __enter__
                if self._stop.wait(self.period):
                    return

    @property
    def seconds(self) -> float:
        return sum(self._last[p] - self._first.get(p, 0.0) for p in self._last)

    @property
    def backends(self) -> int:
        return len(self._last)


def results_path(name: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return RESULTS_DIR / f"{name}-{stamp}.json"


__all__ = [
    "BACKENDS",
    "ROOT",
    "SCORE_BODY",
    "LiveServer",
    "PgBackendCpu",
    "UvicornProcess",
    "api_client",
    "assessment_body",
    "bare_server",
    "bulk_assessments",
    "cpu_seconds",
    "create_patient",
    "descendants",
    "machine_facts",
    "migrated_database",
    "pasi_inputs",
    "percentile",
    "post_assessments",
    "process_tree_rss",
    "results_path",
    "rss_kib",
    "service",
    "timed_median",
    "work_dir",
]
