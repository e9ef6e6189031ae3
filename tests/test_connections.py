"""Connection limits of the run command, against a real uvicorn on loopback (issue 11 item 4).

One server for the module, started by the production command (`tests.live.uvicorn_command`)
with shorter read deadlines than the defaults so the module stays fast: a request head must be
complete within HTTP_HEADER_TIMEOUT_SECONDS of connecting (or of its first byte on a kept-alive
connection), a body within HTTP_BODY_TIMEOUT_SECONDS of its head, and a head may be at most
HTTP_MAX_HEADER_BYTES (the default) long. The keep-alive timeout and the concurrency limit are
uvicorn flags of the command itself, read from it here. Everything is loopback and bounded: at
most 200 sockets, each read with a timeout.

See docs/decisions/0007-connection-limits.md.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.schemas.scores import PASI_EXAMPLE
from app.settings import Settings
from tests.live import ROOT, LiveServer, UvicornProcess, uvicorn_command
from tests.slow_asgi import SLOW_SECONDS

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
MAX_HEADER_BYTES = 16 * 1024  # the documented default of HTTP_MAX_HEADER_BYTES
PROTOCOL = "app.server:BoundedHttpToolsProtocol"
# Deadlines are checked with this much slack for a loaded 2-core machine.
SLACK = 1.5


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


LIVE_COMMAND = uvicorn_command("app.main:create_app", 0, 1)


def _limit_concurrency() -> int:
    """The command's --limit-concurrency (the documented 100 when it has none)."""
    if "--limit-concurrency" not in LIVE_COMMAND:
        return 100
    return int(_flag(LIVE_COMMAND, "--limit-concurrency"))


def _keep_alive() -> float:
    """The command's --timeout-keep-alive (uvicorn's default, 5 s, when it has none)."""
    if "--timeout-keep-alive" not in LIVE_COMMAND:
        return 5.0
    return float(_flag(LIVE_COMMAND, "--timeout-keep-alive"))


# --- a raw HTTP/1.1 client: the limits are about bytes and timing, which httpx hides -------------


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5.0)


def read_answer(sock: socket.socket, timeout: float) -> Answer | None:
    """One response, or None when the server closed (or reset) the connection without one."""
    sock.settimeout(timeout)
    buffer = b""
    try:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, TimeoutError):
        return None
    return Answer(status, headers, body)


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closes `sock` (reading and dropping anything it sends), or None
    when it is still open after `timeout`."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < timeout:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def get(path: str = "/healthz", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + extra + b"\r\n"


def post_head(length: int, key: str = "") -> bytes:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    return (
        b"POST /v1/scores/pasi HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + auth
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def trickle(sock: socket.socket, piece: bytes, timeout: float) -> None:
    """Send `piece` every 0.2 s for up to `timeout` s, stopping once the server sends anything
    (so that no byte follows its close, which would reset the connection)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            return
        try:
            sock.sendall(piece)
        except OSError:
            return


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def assert_status(answer: Answer | None, status: int) -> Answer:
    assert answer is not None, f"expected {status}, got no answer (closed or timed out)"
    assert answer.status == status, (answer.status, answer.body[:200])
    return answer


def assert_problem(answer: Answer | None, status: int) -> None:
    answer = assert_status(answer, status)
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert answer.headers.get("connection") == "close"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("connections")
    with LiveServer(
        f"sqlite:///{data_dir / 'connections.db'}",
        data_dir,
        extra_env={
            "HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        },
    ) as live:
        yield live


@pytest.fixture
def pid(server: LiveServer) -> int:
    assert server.pid is not None
    # Sockets of earlier tests are gone before each test starts.
    assert wait_until(lambda: open_fds(server.pid or 0) < 40, 2 * SLACK + HEADER_TIMEOUT)
    return server.pid


# --- the commands -----------------------------------------------------------------------------


def _connection_flags(command: list[str]) -> dict[str, str]:
    names = ("--http", "--loop", "--timeout-keep-alive", "--limit-concurrency")
    return {name: _flag(command, name) for name in names if name in command}


def test_make_run_the_container_and_the_tests_serve_with_the_same_bounded_flags() -> None:
    recipe = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    make_run = shlex.split(next(line for line in recipe.splitlines() if "uvicorn" in line))
    script = (ROOT / "docker" / "entrypoint.sh").read_text()
    exec_line = re.search(r"^exec uvicorn .*?(?<!\\)$", script, re.M | re.S)
    assert exec_line is not None
    container = shlex.split(exec_line.group(0).replace("\\\n", " "))
    expected = {
        "--http": PROTOCOL,
        "--loop": "uvloop",
        "--timeout-keep-alive": "5",
        "--limit-concurrency": "100",
    }
    assert _connection_flags(LIVE_COMMAND) == expected
    assert Settings.model_fields["http_max_header_bytes"].default == MAX_HEADER_BYTES
    assert _connection_flags(make_run) == expected
    assert _connection_flags(container) == expected


# --- (1) sizes ----------------------------------------------------------------------------------


def test_an_oversized_request_line_or_header_gets_431_and_a_large_legal_one_200(
    server: LiveServer, pid: int
) -> None:
    with connect(server.port) as sock:
        sock.sendall(get(extra=b"X-Fits: " + b"a" * (MAX_HEADER_BYTES // 2) + b"\r\n"))
        assert_status(read_answer(sock, 5), 200)
    with connect(server.port) as sock:
        sock.sendall(get("/healthz?q=" + "a" * MAX_HEADER_BYTES))
        assert_problem(read_answer(sock, 5), 431)
    with connect(server.port) as sock:
        sock.sendall(get(extra=b"X-Big: " + b"a" * (2 * MAX_HEADER_BYTES) + b"\r\n"))
        assert_problem(read_answer(sock, 5), 431)
        assert closed_within(sock, 2) is not None


def _send_unfinished_head(port: int, prefix: bytes, total: int, kept: list[bool]) -> None:
    """Send an unfinished head of `total` bytes, then see whether the server keeps holding it
    (the kernel's loopback buffers may take a few MiB the server has not read)."""
    with connect(port) as sock:
        try:
            sock.sendall(prefix)
            chunk = b"a" * (1 << 20)
            for _ in range(total // len(chunk)):
                sock.sendall(chunk)
        except OSError:
            return  # closed by the server part way
        if closed_within(sock, 2.0) is None:
            kept.append(True)


def test_unfinished_4_mib_headers_and_a_32_mib_one_are_refused_without_growing_memory(
    server: LiveServer, pid: int
) -> None:
    """Issue 11: one 32 MiB header was accepted, and 20 unfinished 4 MiB heads took the worker
    from 87 to 215 MiB."""
    before = rss_mib(pid)
    kept: list[bool] = []
    sizes = [4 << 20] * 20 + [32 << 20]
    senders = [
        threading.Thread(
            target=_send_unfinished_head, args=(server.port, get()[:-2] + b"X-Big: ", size, kept)
        )
        for size in sizes
    ]
    for t in senders:
        t.start()
    peak = before
    while any(t.is_alive() for t in senders):
        peak = max(peak, rss_mib(pid))
        time.sleep(0.02)
    for t in senders:
        t.join()
    peak = max(peak, rss_mib(pid))
    assert not kept, f"{len(kept)} of {len(sizes)} oversized unfinished heads were kept open"
    assert peak - before < 16, f"RSS {before:.0f} -> {peak:.0f} MiB"


# --- (2) header read timeout ------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    server: LiveServer, pid: int
) -> None:
    with connect(server.port) as sock:
        took = closed_within(sock, HEADER_TIMEOUT + 2 * SLACK)
    assert took is not None, "an idle new connection stayed open"
    assert HEADER_TIMEOUT - 0.2 <= took <= HEADER_TIMEOUT + SLACK


def test_headers_sent_too_slowly_get_408_at_the_header_deadline(
    server: LiveServer, pid: int
) -> None:
    """One header line every 0.2 s: each byte arrives in time, the head as a whole does not."""
    with connect(server.port) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        trickle(sock, b"X-Slow: a\r\n", HEADER_TIMEOUT + 2 * SLACK)
        answer = read_answer(sock, 1)
        took = time.monotonic() - start
    assert_problem(answer, 408)
    assert took <= HEADER_TIMEOUT + SLACK + 0.5


# --- (3) body read deadline -------------------------------------------------------------------


def test_a_stalled_body_gets_408_problem_json_after_the_body_deadline(
    server: LiveServer, pid: int
) -> None:
    with connect(server.port) as sock:
        sock.sendall(post_head(100, server.admin_key) + b'{"pasi": ')
        start = time.monotonic()
        answer = read_answer(sock, BODY_TIMEOUT + 2 * SLACK)
        took = time.monotonic() - start
        assert_problem(answer, 408)
        assert BODY_TIMEOUT - 0.2 <= took <= BODY_TIMEOUT + SLACK
        assert closed_within(sock, 1) is not None


def test_a_trickled_body_gets_408_at_the_same_deadline_measured_from_its_head(
    server: LiveServer, pid: int
) -> None:
    """A byte every 0.2 s never lets the connection idle; the deadline is for the whole body."""
    with connect(server.port) as sock:
        sock.sendall(post_head(1000, server.admin_key))
        start = time.monotonic()
        trickle(sock, b" ", BODY_TIMEOUT + 2 * SLACK)
        answer = read_answer(sock, 1)
        took = time.monotonic() - start
    assert_problem(answer, 408)
    assert took <= BODY_TIMEOUT + SLACK + 0.5


# --- (4) concurrency limit --------------------------------------------------------------------


def test_beyond_the_concurrency_limit_new_requests_get_503(server: LiveServer, pid: int) -> None:
    """uvicorn counts open connections (idle kept-alive ones too) against --limit-concurrency."""
    limit = _limit_concurrency()
    held = []
    try:
        for _ in range(limit - 1):  # kept alive after one request each (within the limit)
            sock = connect(server.port)
            held.append(sock)
            sock.sendall(get())
            assert_status(read_answer(sock, 5), 200)
        with connect(server.port) as sock:
            sock.sendall(get())
            answer = read_answer(sock, 5)
            assert_problem(answer, 503)
            assert answer is not None
            assert answer.headers["retry-after"] == "1"
        before_closing = open_fds(pid)
        for sock in held[:10]:
            sock.close()
        del held[:10]
        assert wait_until(lambda: open_fds(pid) <= before_closing - 10, 2)
        with connect(server.port) as sock:
            sock.sendall(get())
            assert_status(read_answer(sock, 5), 200)
    finally:
        for sock in held:
            sock.close()


# --- (5) many slow connections are released -----------------------------------------------------


def test_two_hundred_slow_connections_are_released_with_their_memory(
    server: LiveServer, pid: int
) -> None:
    """20 stalled bodies, 80 half-sent heads (8 KiB each, under the limit) and 100 silent
    sockets: while they are held the server answers 503 beyond its limit; after the deadlines
    every socket is closed by the server, the worker's fds and RSS are back near the baseline,
    and it serves normally."""
    baseline_fds = open_fds(pid)
    baseline_rss = rss_mib(pid)
    socks: list[socket.socket] = []
    try:
        for _ in range(20):
            sock = connect(server.port)
            sock.sendall(post_head(500, server.admin_key) + b'{"pasi": ')
            socks.append(sock)
        for _ in range(80):
            sock = connect(server.port)
            sock.sendall(get()[:-2] + b"X-Slow: " + b"a" * 8192)
            socks.append(sock)
        socks.extend(connect(server.port) for _ in range(100))
        assert wait_until(lambda: open_fds(pid) >= baseline_fds + 190, 2)
        held_fds, held_rss = open_fds(pid), rss_mib(pid)
        with connect(server.port) as sock:
            sock.sendall(get())
            assert_problem(read_answer(sock, 5), 503)

        released = wait_until(
            lambda: open_fds(pid) <= baseline_fds + 2, max(HEADER_TIMEOUT, BODY_TIMEOUT) + SLACK
        )
        after_fds, after_rss = open_fds(pid), rss_mib(pid)
        assert released, f"fds {baseline_fds} -> {held_fds} -> {after_fds} (not released)"
        assert after_rss - baseline_rss < 8, (
            f"RSS {baseline_rss:.1f} -> {held_rss:.1f} -> {after_rss:.1f} MiB"
        )
        closed = sum(closed_within(sock, 0.2) is not None for sock in socks)
        assert closed == len(socks)
        print(
            f"200 slow connections: fds {baseline_fds} -> {held_fds} -> {after_fds}, "
            f"RSS {baseline_rss:.1f} -> {held_rss:.1f} -> {after_rss:.1f} MiB"
        )
    finally:
        for sock in socks:
            sock.close()
    with connect(server.port) as sock:
        sock.sendall(get())
        assert_status(read_answer(sock, 5), 200)


# --- (6) normal traffic -----------------------------------------------------------------------


def test_normal_requests_reuse_a_kept_alive_connection_until_the_keep_alive_timeout(
    server: LiveServer, pid: int
) -> None:
    """Requests on one connection, a pause longer than the header timeout between them, a body
    sent in two parts within its deadline: all answered; the idle connection then closes after
    uvicorn's keep-alive timeout (and not at the shorter header timeout)."""
    body = json.dumps({"pasi": PASI_EXAMPLE}).encode()
    with connect(server.port) as sock:
        for _ in range(3):
            sock.sendall(get())
            answer = assert_status(read_answer(sock, 5), 200)
            assert answer.headers.get("connection") != "close"
        time.sleep(HEADER_TIMEOUT + 0.5)
        sock.sendall(post_head(len(body), server.admin_key) + body[:10])
        time.sleep(BODY_TIMEOUT / 2)
        sock.sendall(body[10:])
        assert assert_status(read_answer(sock, 5), 200).json()["pasi"] == 28.7
        took = closed_within(sock, _keep_alive() + 2 * SLACK)
    assert took is not None
    assert _keep_alive() - 0.5 <= took <= _keep_alive() + SLACK


def test_a_response_slower_than_both_deadlines_is_not_cut(tmp_path: Path) -> None:
    """The deadlines time the client's sending, not the server's answering: on one kept-alive
    connection, a GET and a POST each answered after longer than both deadlines."""
    env = {"HTTP_HEADER_TIMEOUT_SECONDS": "0.5", "HTTP_BODY_TIMEOUT_SECONDS": "0.5"}
    slow = UvicornProcess("tests.slow_asgi:create_app", tmp_path / "slow.log", env=env)
    with slow as server, connect(server.port) as sock:
        for request in (get("/slow"), post_head(2).replace(b"/v1/scores/pasi", b"/slow") + b"{}"):
            start = time.monotonic()
            sock.sendall(request)
            assert_status(read_answer(sock, 5), 200)
            # The event loop's timers have millisecond resolution and may fire a hair early;
            # a cut answer would come at a deadline (0.5 s), a second sooner.
            assert time.monotonic() - start >= SLOW_SECONDS - 0.01
