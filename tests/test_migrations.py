"""Alembic migrations on each backend: `upgrade head` builds exactly the models' schema (what
`alembic check` verifies), `downgrade base` removes every table, and `upgrade head` works again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect

from app.db.models import Base
from tests.dbs import alembic_config, empty_database, selected_backends

MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=selected_backends(None))
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on each backend under test."""
    with empty_database(request.param, tmp_path) as url:
        yield url


def _engine(url: str) -> Engine:
    return create_engine(url)


def _tables(url: str) -> set[str]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _schema_diffs(url: str) -> list[Any]:
    """What `alembic check` would report: autogenerate's differences from the models."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _current_revision(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _head(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_migrations_have_a_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"several heads: {heads} (merge them)"


def test_upgrade_head_builds_exactly_the_models_schema(database: str) -> None:
    assert _tables(database) == set()
    command.upgrade(alembic_config(database), "head")
    assert _current_revision(database) == _head(database)
    assert _tables(database) == MODEL_TABLES | {"alembic_version"}
    diffs = _schema_diffs(database)
    assert not diffs, (
        "the migrations do not match app.db.models (write a migration with "
        "`alembic revision --autogenerate`):\n" + pformat(diffs)
    )


def test_downgrade_to_base_removes_every_table(database: str) -> None:
    config = alembic_config(database)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert _tables(database) == {"alembic_version"}
    assert _current_revision(database) is None


def test_upgrade_after_downgrade_restores_the_schema(database: str) -> None:
    config = alembic_config(database)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    assert _current_revision(database) == _head(database)
    assert _tables(database) == MODEL_TABLES | {"alembic_version"}
    diffs = _schema_diffs(database)
    assert not diffs, "schema differs from the models after a round trip:\n" + pformat(diffs)
