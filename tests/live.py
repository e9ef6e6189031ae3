"""A real uvicorn process on a free loopback port, for tests that need real concurrency,
restarts or kill -9 (the in-process TestClient cannot show those)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

from app.services.api_keys import BOOTSTRAP_KEY_FILE

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    """How production runs the service (uvloop + httptools, bounded by app.server's protocol and
    the keep-alive and concurrency flags); the benchmarks' bare app uses the same command so that
    their ratios compare like with like."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "app.server:BoundedHttpToolsProtocol",
        "--timeout-keep-alive",
        "5",
        "--limit-concurrency",
        "100",
        "--log-level",
        "warning",
    ]


class UvicornProcess:
    """An ASGI app in a uvicorn subprocess (its own process group), started by
    `uvicorn_command`. Ready once `ready_path` answers (any status when `ready_status` is None)."""

    def __init__(
        self,
        app: str,
        log_path: Path,
        *,
        workers: int = 1,
        port: int | None = None,
        env: dict[str, str] | None = None,
        ready_path: str = "/",
        ready_status: int | None = None,
    ) -> None:
        self.app = app
        self.log_path = log_path
        self.workers = workers
        self.port = port or free_port()
        self.env = env or {}
        self.ready_path = ready_path
        self.ready_status = ready_status
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _is_ready(self) -> bool:
        try:
            status = httpx.get(self.url + self.ready_path, timeout=1.0).status_code
        except httpx.HTTPError:
            return False
        return self.ready_status is None or status == self.ready_status

    def start(self, timeout: float = 30.0) -> Self:
        command = uvicorn_command(self.app, self.port, self.workers)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited early:\n{self._log_tail()}")
            if self._is_ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.app} did not become ready:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def kill(self) -> None:
        """kill -9 the whole process group (workers included), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class LiveServer(UvicornProcess):
    """The service on a given database, ready once /readyz says the database answers."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        *,
        workers: int = 1,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        port = port or free_port()
        super().__init__(
            "app.main:create_app",
            data_dir / f"server-{port}.log",
            workers=workers,
            port=port,
            env={
                "DATABASE_URL": database_url,
                "DATA_DIR": str(data_dir),
                "RATE_LIMIT_PER_MINUTE": "0",
                "FAILED_AUTH_PER_MINUTE": "0",
                **(extra_env or {}),
            },
            ready_path="/readyz",
            ready_status=200,
        )
        self.database_url = database_url
        self.data_dir = data_dir

    @property
    def admin_key(self) -> str:
        return (self.data_dir / BOOTSTRAP_KEY_FILE).read_text().strip()
