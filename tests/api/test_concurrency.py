"""Real concurrency and restarts against a live uvicorn process (the in-process TestClient
serialises requests and cannot crash): concurrent writers and idempotent replays, concurrent
amendments with one If-Match, and durability of acknowledged writes across stop and kill -9.

PostgreSQL is the production database; SQLite (a file) runs the same checks, smaller, because
the embedded default must be just as safe.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.api.helpers import (
    all_pages,
    amend_body,
    assessment_body,
    bearer,
    new_patient,
    patient_body,
)
from tests.dbs import empty_database, migrate, selected_backends
from tests.live import LiveServer

T = TypeVar("T")
REPLAYED = "Idempotent-Replayed"
# Writers per backend and how many assessments they post in total.
WRITERS = {"postgresql": (8, 200), "sqlite": (4, 60)}


@pytest.fixture(params=["postgresql", "sqlite"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def live_database(request: pytest.FixtureRequest, db_kind: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of `db_kind` (PostgreSQL, or a SQLite file), dropped after."""
    if db_kind not in selected_backends(request.config.getoption("--db")):
        pytest.skip(f"{db_kind} is not among the selected test databases")
    with empty_database(db_kind, tmp_path) as url:
        migrate(url)
        yield url


@pytest.fixture
def data_dir_live(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def _client(server: LiveServer) -> httpx.Client:
    """A client with its own connection pool (so its own connections to the server)."""
    return httpx.Client(base_url=server.url, headers=bearer(server.admin_key), timeout=60.0)


def _in_threads(
    workers: int, jobs: list[Callable[[httpx.Client], T]], server: LiveServer
) -> list[T]:
    """Run `jobs` on `workers` threads, each with its own client, all released at once; the
    results come back in job order."""
    chunks = [list(range(w, len(jobs), workers)) for w in range(workers)]
    start = threading.Barrier(workers)
    results: dict[int, T] = {}

    def run(indices: list[int]) -> None:
        with _client(server) as client:
            start.wait(timeout=30)
            for i in indices:
                results[i] = jobs[i](client)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(run, c) for c in chunks]:
            future.result()
    return [results[i] for i in range(len(jobs))]


def _listed_ids(client: httpx.Client, patient_id: str) -> list[str]:
    items = all_pages(client, f"/v1/patients/{patient_id}/assessments", {"limit": 200})
    return [i["id"] for i in items]


def _day(n: int) -> str:
    return (date(2015, 1, 1) + timedelta(days=n)).isoformat()


# --- (1) concurrent writers, then concurrent idempotent replays -------------------------------


def test_concurrent_writers_store_each_assessment_once_and_replays_store_nothing(
    live_database: str, db_kind: str, data_dir_live: Path
) -> None:
    workers, total = WRITERS[db_kind]
    with LiveServer(live_database, data_dir_live) as server, _client(server) as client:
        pid = new_patient(client)["id"]
        url = f"/v1/patients/{pid}/assessments"
        bodies = [assessment_body(_day(n % 50), visit=f"Upload {n}") for n in range(total)]

        def post(n: int) -> Callable[[httpx.Client], httpx.Response]:
            return lambda c: c.post(url, json=bodies[n], headers={"Idempotency-Key": f"up-{n}"})

        first = _in_threads(workers, [post(n) for n in range(total)], server)
        assert [r.status_code for r in first] == [201] * total, [
            r.text for r in first if r.status_code != 201
        ][:3]
        assert not any(REPLAYED in r.headers for r in first)
        created = [r.json()["id"] for r in first]
        assert len(set(created)) == total
        listed = _listed_ids(client, pid)
        assert len(listed) == total
        assert set(listed) == set(created)

        again = _in_threads(workers, [post(n) for n in range(total)], server)
        for before, after in zip(first, again, strict=True):
            assert after.status_code == 201, after.text
            assert after.headers.get(REPLAYED) == "true"
            assert after.json() == before.json()
        assert sorted(_listed_ids(client, pid)) == sorted(listed)


def test_simultaneous_retries_of_one_key_store_exactly_one_assessment(
    live_database: str, db_kind: str, data_dir_live: Path
) -> None:
    workers, total = WRITERS[db_kind]
    keys = total // 10
    with LiveServer(live_database, data_dir_live) as server, _client(server) as client:
        pid = new_patient(client)["id"]
        url = f"/v1/patients/{pid}/assessments"

        def post(k: int) -> Callable[[httpx.Client], httpx.Response]:
            body = assessment_body(_day(k), visit=f"Visit {k}")
            return lambda c: c.post(url, json=body, headers={"Idempotency-Key": f"dup-{k}"})

        # Every key is sent by every writer at (nearly) the same moment.
        jobs = [post(k) for k in range(keys) for _ in range(workers)]
        answers = _in_threads(workers, jobs, server)
        fresh: Counter[int] = Counter()
        ids_by_key: dict[int, set[str]] = {}
        for n, r in enumerate(answers):
            k = n // workers
            # The first request wins; the others are replays, or 409 while it is in flight.
            assert r.status_code in (201, 409), r.text
            if r.status_code == 201:
                ids_by_key.setdefault(k, set()).add(r.json()["id"])
                if REPLAYED not in r.headers:
                    fresh[k] += 1
        assert all(fresh[k] == 1 for k in range(keys)), fresh
        assert all(len(ids) == 1 for ids in ids_by_key.values()), ids_by_key
        assert len(_listed_ids(client, pid)) == keys


# --- (2) concurrent amendments with the same If-Match ----------------------------------------


def test_of_ten_concurrent_amendments_with_one_if_match_exactly_one_wins(
    live_database: str, data_dir_live: Path
) -> None:
    with LiveServer(live_database, data_dir_live) as server, _client(server) as client:
        pid = new_patient(client)["id"]
        created = client.post(
            f"/v1/patients/{pid}/assessments", json=assessment_body("2020-01-01", iga=4)
        )
        assert created.status_code == 201, created.text
        etag = created.headers["ETag"]
        url = f"/v1/assessments/{created.json()['id']}"

        def amend(n: int) -> Callable[[httpx.Client], httpx.Response]:
            body = amend_body(created.json(), f"correction {n}", notes=f"writer {n}")
            return lambda c: c.put(url, json=body, headers={"If-Match": etag})

        answers = _in_threads(10, [amend(n) for n in range(10)], server)
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {200: 1, 412: 9}, [r.text for r in answers if r.status_code != 412]
        winner = next(r for r in answers if r.status_code == 200)
        assert winner.headers["ETag"] == '"2"'

        current = client.get(url)
        assert current.headers["ETag"] == '"2"'
        assert current.json() == winner.json()
        history = client.get(f"{url}/history").json()["items"]
        assert [v["version"] for v in history] == [1, 2]
        n = int(winner.json()["notes"].removeprefix("writer "))
        assert history[1]["notes"] == f"writer {n}"
        assert history[1]["reason"] == f"correction {n}"


RACES = {
    # name: (requests, what the racing writers may answer)
    "delete-delete": (["DELETE"] * 4, {200}),
    "put-star-put-star": (["PUT"] * 3, {200, 412}),
    # A PUT that comes after a DELETE finds the record entered-in-error: 409, as when serial.
    "delete-put": (["DELETE", "PUT", "DELETE", "PUT"], {200, 409, 412}),
}


def _race_job(
    method: str, n: int, url: str, record: dict[str, Any]
) -> Callable[[httpx.Client], httpx.Response]:
    if method == "DELETE":
        return lambda c: c.delete(url, params={"reason": f"duplicate entry {n}"})
    body = amend_body(record, f"correction {n}", notes=f"writer {n}")
    return lambda c: c.put(url, json=body, headers={"If-Match": "*"})


@pytest.mark.parametrize("race", sorted(RACES))
def test_racing_writers_to_one_assessment_get_200_or_412_never_500(
    live_database: str, data_dir_live: Path, race: str
) -> None:
    """Concurrent DELETEs of one record all answer 200 (marking an entered-in-error record
    again changes nothing); PUTs with `If-Match: *` racing each other or a DELETE get 412 when
    they lose (409 when the DELETE committed before they read the record). Each round leaves
    a history with consecutive versions and no duplicate."""
    methods, allowed = RACES[race]
    with LiveServer(live_database, data_dir_live) as server, _client(server) as client:
        pid = new_patient(client)["id"]
        for round_ in range(8):
            created = client.post(
                f"/v1/patients/{pid}/assessments", json=assessment_body(_day(round_))
            )
            assert created.status_code == 201, created.text
            url = f"/v1/assessments/{created.json()['id']}"
            answers = _in_threads(
                len(methods),
                [_race_job(m, n, url, created.json()) for n, m in enumerate(methods)],
                server,
            )
            statuses = {r.status_code for r in answers}
            assert statuses <= allowed, [r.text for r in answers if r.status_code not in allowed]
            assert 200 in statuses
            history = client.get(f"{url}/history").json()["items"]
            versions = [v["version"] for v in history]
            assert versions == list(range(1, len(versions) + 1))
            # One version per winning change (repeated DELETEs of a marked record add none).
            marked = [v for v in history if v["action"] == "entered-in-error"]
            assert len(marked) <= 1


# --- uniqueness rules under concurrency -------------------------------------------------------


def test_concurrent_patients_with_one_identifier_make_one_patient_and_409s_naming_it(
    live_database: str, data_dir_live: Path
) -> None:
    with LiveServer(live_database, data_dir_live) as server, _client(server) as client:
        body = patient_body("S-RACE")
        answers = _in_threads(8, [lambda c: c.post("/v1/patients", json=body)] * 8, server)
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {201: 1, 409: 7}, [r.text for r in answers if r.status_code >= 500]
        winner = next(r.json()["id"] for r in answers if r.status_code == 201)
        assert {r.json()["patient_id"] for r in answers if r.status_code == 409} == {winner}
        listed = all_pages(client, "/v1/patients")
        assert [p["id"] for p in listed] == [winner]


def test_concurrent_baseline_flags_leave_exactly_one_baseline(
    live_database: str, data_dir_live: Path
) -> None:
    with LiveServer(live_database, data_dir_live) as server, _client(server) as client:
        pid = new_patient(client)["id"]
        url = f"/v1/patients/{pid}/assessments"

        def flag(n: int) -> Callable[[httpx.Client], httpx.Response]:
            body = assessment_body(_day(n), is_baseline=True, visit=f"Baseline {n}")
            return lambda c: c.post(url, json=body)

        answers = _in_threads(8, [flag(n) for n in range(8)], server)
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {201: 1, 409: 7}, [r.text for r in answers if r.status_code >= 500]
        items = all_pages(client, url)
        assert [i["is_baseline"] for i in items] == [True]


def test_concurrent_amendments_flagging_different_assessments_leave_one_baseline(
    live_database: str, data_dir_live: Path
) -> None:
    with LiveServer(live_database, data_dir_live) as server, _client(server) as client:
        pid = new_patient(client)["id"]
        url = f"/v1/patients/{pid}/assessments"
        created = []
        for n in range(8):
            r = client.post(url, json=assessment_body(_day(n)))
            assert r.status_code == 201, r.text
            created.append((r.json(), r.headers["ETag"]))

        def flag(n: int) -> Callable[[httpx.Client], httpx.Response]:
            assessment, etag = created[n]
            body = amend_body(assessment, "this is the baseline", is_baseline=True)
            return lambda c: c.put(
                f"/v1/assessments/{assessment['id']}", json=body, headers={"If-Match": etag}
            )

        answers = _in_threads(8, [flag(n) for n in range(8)], server)
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {200: 1, 409: 7}, [r.text for r in answers if r.status_code >= 500]
        items = all_pages(client, url)
        assert sum(i["is_baseline"] for i in items) == 1


# --- (3) acknowledged writes survive a restart and a crash ------------------------------------


def _post_acknowledged(client: httpx.Client, patient_id: str, count: int) -> dict[str, Any]:
    acknowledged = {}
    for n in range(count):
        r = client.post(
            f"/v1/patients/{patient_id}/assessments",
            json=assessment_body(_day(n), visit=f"Visit {n}", iga=n % 5),
        )
        assert r.status_code == 201, r.text
        acknowledged[r.json()["id"]] = r.json()
    return acknowledged


def _assert_all_readable(
    server: LiveServer, patient_id: str, expected: dict[str, Any], *, nothing_else: bool = True
) -> None:
    """Every expected assessment reads back unchanged and is listed; with `nothing_else`, the
    list holds nothing more (a request cut off by a crash may have committed unanswered)."""
    with _client(server) as client:
        assert client.get(f"/v1/patients/{patient_id}").status_code == 200
        for assessment_id, body in expected.items():
            r = client.get(f"/v1/assessments/{assessment_id}")
            assert r.status_code == 200, r.text
            assert r.json() == body
        listed = set(_listed_ids(client, patient_id))
        if nothing_else:
            assert listed == set(expected)
        else:
            assert listed >= set(expected)


@pytest.mark.parametrize("shutdown", ["stop", "kill -9"])
def test_acknowledged_assessments_survive_a_restart(
    live_database: str, data_dir_live: Path, shutdown: str
) -> None:
    server = LiveServer(live_database, data_dir_live).start()
    try:
        with _client(server) as client:
            pid = new_patient(client)["id"]
            acknowledged = _post_acknowledged(client, pid, 30)
    finally:
        if shutdown == "stop":
            server.stop()
        else:
            server.kill()
    with LiveServer(live_database, data_dir_live) as restarted:
        _assert_all_readable(restarted, pid, acknowledged)


def test_a_crash_under_load_loses_no_acknowledged_write_and_retries_store_each_once(
    live_database: str, data_dir_live: Path
) -> None:
    """Writers post with Idempotency-Keys while the server is killed -9. Everything answered
    201 must be there after the restart; retrying the unanswered keys stores each exactly once
    (an in-flight claim left by the crash is taken over once its lease expires)."""
    env = {"IDEMPOTENCY_LEASE_SECONDS": "1"}
    server = LiveServer(live_database, data_dir_live, extra_env=env).start()
    acknowledged: dict[str, dict[str, Any]] = {}
    unanswered: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()
    with _client(server) as client:
        pid = new_patient(client)["id"]
    url = f"/v1/patients/{pid}/assessments"

    def body_for(key: str) -> dict[str, Any]:
        n = int(key.rsplit("-", 1)[1])
        return assessment_body(_day(n % 300), visit=key)

    def writer(w: int) -> None:
        with _client(server) as c:
            for n in range(10_000):
                key = f"w{w}-{n}"
                try:
                    r = c.post(url, json=body_for(key), headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    with lock:
                        unanswered.add(key)
                    return
                assert r.status_code == 201, r.text
                with lock:
                    acknowledged[key] = r.json()
                    if len(acknowledged) >= 60:
                        enough.set()

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(writer, w) for w in range(4)]
        assert enough.wait(timeout=60)
        server.kill()
        for future in futures:
            future.result()

    with LiveServer(live_database, data_dir_live, extra_env=env) as restarted:
        _assert_all_readable(
            restarted, pid, {b["id"]: b for b in acknowledged.values()}, nothing_else=False
        )
        with _client(restarted) as client:
            deadline = time.monotonic() + 30
            for key in sorted(unanswered):
                while True:
                    r = client.post(url, json=body_for(key), headers={"Idempotency-Key": key})
                    if r.status_code != 409 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert r.status_code == 201, r.text
            # Acknowledged keys replay their first answer.
            for key, first in list(acknowledged.items())[:10]:
                r = client.post(url, json=body_for(key), headers={"Idempotency-Key": key})
                assert r.headers.get(REPLAYED) == "true"
                assert r.json() == first
            listed = _listed_ids(client, pid)
            assert len(listed) == len(set(listed)) == len(acknowledged) + len(unanswered)
