"""Migrate the embedded SQLite database on start, so the default needs no separate step.

PostgreSQL deployments run `alembic upgrade head` as their own step before the servers start
(the container entrypoint does); several workers starting at once on SQLite take turns through
a file lock.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

log = logging.getLogger("app.migrate")


def _alembic_ini() -> Path | None:
    for candidate in (
        Path(__file__).resolve().parents[2] / "alembic.ini",
        Path.cwd() / "alembic.ini",
    ):
        if candidate.is_file():
            return candidate
    return None


def upgrade_to_head(database_url: str, lock_dir: Path) -> None:
    ini = _alembic_ini()
    if ini is None:
        log.warning("alembic.ini not found: run `alembic upgrade head` before starting")
        return
    config = Config(str(ini))
    config.attributes["database_url"] = database_url
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # the embedded database lives here
    with (lock_dir / ".migrate.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        command.upgrade(config, "head")
