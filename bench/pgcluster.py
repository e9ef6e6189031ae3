"""A throwaway PostgreSQL cluster for the crash drill, and a proxy that can withhold the reply to
a commit.

The drill kills PostgreSQL with `kill -9`, so it must never do that to a server anybody else
uses (the shared test server on 127.0.0.1:5432 above all). `ThrowawayCluster` runs `initdb` into
a temporary directory (as the `postgres` OS user when we are root: initdb and postgres refuse to
run as root), starts `postgres` itself as a child of this process on a free loopback port with
its unix socket in that directory, and only ever signals the postmaster whose pid it started,
read back from that directory's `postmaster.pid` and checked against `/proc/<pid>/cmdline`.

Durability settings are PostgreSQL's defaults, passed explicitly so the log shows them:
`fsync=on`, `synchronous_commit=on`, `full_page_writes=on`.

`CommitWithholdingProxy` sits between the service and the cluster. It forwards bytes both ways
(server to client in whole protocol messages). When armed, it waits for the reply to the COMMIT
of a transaction that inserted at least four rows (the drill's keyed POST: the assessment,
its history row, its audit event with its patient link, and its key, claimed then answered by
an update or, when requests are written together, inserted answered), keeps that reply, calls
back (the drill kills PostgreSQL there) and then drops the service's connection:
the commit is durable, the service never hears of it. That is a kill landing between a commit
and its response by construction rather than by luck.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.live import free_port

SHARED_PORT = 5432  # the shared server: never ours, never signalled
BIN_GLOBS = ("usr/lib/postgresql/*/bin", "usr/pgsql-*/bin", "usr/local/pgsql/bin")
RECOVERY_LINE = "automatic recovery in progress"


class ClusterUnavailable(Exception):
    """This machine cannot run a throwaway cluster (no binaries, or root without `postgres`):
    the drill is skipped, not failed."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path))) or (0,)


def find_bindir() -> Path:
    """The newest directory holding both `initdb` and `postgres`; CRASH_PG_BINDIR, when set,
    is the only one looked at (set it to a directory without them to skip the drill)."""
    candidates: list[Path] = []
    if os.environ.get("CRASH_PG_BINDIR"):
        candidates.append(Path(os.environ["CRASH_PG_BINDIR"]))
    else:
        for pattern in BIN_GLOBS:
            candidates += sorted(Path("/").glob(pattern), key=_version_key, reverse=True)
        found = shutil.which("initdb")
        if found:
            candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    where = (
        f"CRASH_PG_BINDIR={os.environ['CRASH_PG_BINDIR']}"
        if os.environ.get("CRASH_PG_BINDIR")
        else f"/{', /'.join(BIN_GLOBS)} or on PATH"
    )
    raise ClusterUnavailable(f"no PostgreSQL server binaries (initdb and postgres) in {where}")


def _die_with_parent() -> None:
    """In the postmaster's child, after the user switch (which would clear it): SIGKILL it if
    the thread that started it dies, so that a drill killed outright leaves no server behind
    (its backends then exit by themselves: they watch the postmaster)."""
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (scanning /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie has let go of everything: it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ThrowawayCluster:
    def __init__(self, root: Path, *, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.root = root
        self.data = root / "pgdata"
        self.sockets = root / "sockets"
        self.log_path = root / "postgres.log"
        self.port = self._free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.owner: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable(
                    "running as root, and there is no `postgres` OS user to own the cluster"
                ) from None
            self.owner = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.starts = 0
        self.crashes = 0

    @staticmethod
    def _free_port() -> int:
        while True:
            port = free_port()
            if port != SHARED_PORT:
                return port

    # ------------------------------------------------------------------ lifecycle

    def init(self) -> None:
        for directory in (self.data, self.sockets):
            directory.mkdir(mode=0o700)
            if self.owner:
                os.chown(directory, self.owner["user"], self.owner["group"])
        os.chmod(self.root, 0o755)  # the postgres user must reach its directories
        command = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
            # Skips only initdb's own final fsync of the template files, which a process kill
            # (the page cache survives) never needs; the server runs with fsync=on.
            "--no-sync",
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, **self.owner
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the postmaster as our own child (so we alone know and reap its pid) and wait
        until it accepts connections; after a crash this is PostgreSQL's crash recovery.
        Call from the main thread only."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "full_page_writes=on",
            "-c",
            "max_connections=80",
            "-c",
            "shared_buffers=32MB",
        ]
        pdeathsig = (
            sys.platform == "linux" and threading.current_thread() is threading.main_thread()
        )
        if pdeathsig:
            _libc()  # loaded before the fork: the child only calls it
        with self.log_path.open("ab") as log:
            # preexec_fn runs after the user switch and only calls prctl (safe with threads)
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if pdeathsig else None,
                **self.owner,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.process.returncode}):\n{self.log()}")
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.crash()
        raise RuntimeError(f"postgres did not accept connections in {timeout:.0f} s:\n{self.log()}")

    def postmaster_pid(self) -> int:
        """The pid in OUR data directory's postmaster.pid, checked to be the process we started
        and to be running on our data directory."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        if self.process is None or pid != self.process.pid:
            raise RuntimeError(f"postmaster.pid names {pid}, not the postmaster we started")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if str(self.data).encode() not in cmdline:
            raise RuntimeError(f"pid {pid} is not running on {self.data}")
        return pid

    def crash(self) -> int:
        """kill -9 the postmaster, then at once every process it had started (a postmaster
        killed alone lets its backends finish what they are doing and answer it, which is not a
        crash). Returns how many processes were killed; waits (bounded) until all are gone."""
        if self.process is None or self.process.poll() is not None:
            return 0
        pid = self.postmaster_pid()
        children = _children_of(pid)
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.005)
        self.crashes += 1
        return 1 + len(children)

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), bounded; kill -9 whatever is left."""
        if self.process is None or self.process.poll() is not None:
            return
        children = _children_of(self.process.pid)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.crash()
        for child in children:
            if _alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ addresses & log

    def conninfo(self, database: str, port: int | None = None) -> str:
        return f"host=127.0.0.1 port={port or self.port} user=postgres dbname={database}"

    def url(self, database: str, port: int | None = None) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def log(self, tail: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def recoveries(self) -> int:
        """Crash recoveries PostgreSQL itself reported in its log."""
        try:
            return self.log_path.read_text(errors="replace").count(RECOVERY_LINE)
        except OSError:
            return 0


# --------------------------------------------------------------------------- the proxy


class _Pair:
    """One service connection and its upstream connection to the cluster."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.buffer = b""
        self.inserts = 0

    def reset(self) -> None:
        self.inserts = 0

    def note(self, tag: bytes) -> None:
        """Count inserted rows from a CommandComplete tag ("INSERT 0 1", ...)."""
        words = tag.split()
        if len(words) >= 2 and words[0] == b"INSERT" and words[-1].isdigit():
            self.inserts += int(words[-1])


class CommitWithholdingProxy:
    """A loopback TCP proxy to `upstream_port` (see the module's docstring). The service must
    connect with sslmode=disable and gssencmode=disable, so that every byte the server sends is
    a framed protocol message."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.selector = selectors.DefaultSelector()
        self.pairs: set[_Pair] = set()
        self.lock = threading.Lock()
        self._callback: Callable[[], None] | None = None
        self.fired = threading.Event()
        self.withheld = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def service_url(self, database: str) -> str:
        return (
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"
            "?sslmode=disable&gssencmode=disable"
        )

    def start(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for pair in list(self.pairs):
            self._close(pair)
        self.listener.close()
        self.selector.close()

    def arm(self, callback: Callable[[], None]) -> None:
        """On the next matching COMMIT reply: withhold it, call `callback`, drop the connection."""
        with self.lock:
            self.fired.clear()
            self._callback = callback

    def disarm(self) -> bool:
        """Stop waiting; True if nothing fired (the caller may act itself), False if it had."""
        with self.lock:
            waiting = self._callback is not None
            self._callback = None
            return waiting

    # ------------------------------------------------------------------ event loop

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _events in self.selector.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                    continue
                pair, direction = key.data
                if pair in self.pairs:
                    try:
                        self._pump(pair, direction)
                    except OSError:
                        self._close(pair)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
        except OSError:  # PostgreSQL is down: the service sees its connection closed at once
            client.close()
            return
        for sock in (client, upstream):
            sock.settimeout(10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, upstream)
        self.pairs.add(pair)
        self.selector.register(client, selectors.EVENT_READ, (pair, "up"))
        self.selector.register(upstream, selectors.EVENT_READ, (pair, "down"))

    def _pump(self, pair: _Pair, direction: str) -> None:
        if direction == "up":
            data = pair.client.recv(65536)
            if not data:
                self._close(pair)
                return
            pair.upstream.sendall(data)
            return
        data = pair.upstream.recv(65536)
        if not data:
            self._close(pair)
            return
        pair.buffer += data
        out: list[bytes] = []
        while len(pair.buffer) >= 5:
            length = int.from_bytes(pair.buffer[1:5], "big")
            if len(pair.buffer) < 1 + length:
                break
            message, pair.buffer = pair.buffer[: 1 + length], pair.buffer[1 + length :]
            kind = message[:1]
            if kind == b"C":
                tag = message[5:].rstrip(b"\0")
                if tag == b"COMMIT":
                    if pair.inserts >= 4 and self._withhold(pair, out):
                        return
                    pair.reset()
                elif tag == b"ROLLBACK":
                    pair.reset()
                else:
                    pair.note(tag)
            elif kind == b"Z" and message[5:6] == b"I":
                pair.reset()
            out.append(message)
        if out:
            pair.client.sendall(b"".join(out))

    def _withhold(self, pair: _Pair, before: list[bytes]) -> bool:
        with self.lock:
            callback, self._callback = self._callback, None
        if callback is None:
            return False
        if before:
            pair.client.sendall(b"".join(before))
        self.withheld += 1
        try:
            callback()  # PostgreSQL dies with the commit durable and its reply unsent
        finally:
            self._close(pair)
            self.fired.set()
        return True

    def _close(self, pair: _Pair) -> None:
        self.pairs.discard(pair)
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()
