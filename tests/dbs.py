"""Throwaway databases for tests: a SQLite file, or a fresh PostgreSQL database on the server
named by TEST_POSTGRES_URL (default: the local server, database `test`, user `postgres`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db.database import Database

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


def selected_backends(option: str | None) -> list[str]:
    raw = option or os.environ.get("TEST_DATABASES", "sqlite,postgresql")
    chosen = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown test database(s): {sorted(unknown)}; use {BACKENDS}")
    return chosen


def _pg_admin_conninfo() -> str:
    url = make_url(POSTGRES_ADMIN_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def empty_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new, empty database; drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / f'test-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"psoriasis_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


@contextmanager
def database_of(backend: str, tmp_dir: Path, *, migrated: bool) -> Iterator[Database]:
    """The service's `Database` on a throwaway database: migrated to head, or holding only a
    table `t (n INTEGER PRIMARY KEY)` for tests of transactions alone; disposed after."""
    with empty_database(backend, tmp_dir) as url:
        if migrated:
            migrate(url)
        database = Database(url)
        try:
            if not migrated:
                with database.transaction() as session:
                    session.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
            yield database
        finally:
            database.dispose()
