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

import httpx

from app.services.api_keys import BOOTSTRAP_KEY_FILE

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    """How production runs the service (uvloop + httptools); the benchmarks' bare app uses the
    same command so that their ratios compare like with like."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
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
        "httptools",
        "--log-level",
        "warning",
    ]


class LiveServer:
    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        *,
        workers: int = 1,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.workers = workers
        self.port = port or free_port()
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / BOOTSTRAP_KEY_FILE).read_text().strip()

    def start(self, timeout: float = 30.0) -> LiveServer:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "DATA_DIR": str(self.data_dir),
            "RATE_LIMIT_PER_MINUTE": "0",
            **self.extra_env,
        }
        command = uvicorn_command("app.main:app", self.port, self.workers)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log_path.read_text()[-3000:]}")

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

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
