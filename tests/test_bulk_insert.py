"""`app.db.bulk.insert_rows` hands rows to the driver itself: what it stores must be exactly what
SQLAlchemy's own executemany stores, its returned ids must follow the rows' order, and errors,
listeners and transactions must behave as through `Connection.execute`. On both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Uuid,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from app.db.bulk import insert_rows
from app.db.database import Database
from app.db.models import BigId, UtcDateTime
from tests.dbs import BACKENDS, database_of

metadata = MetaData()


def _table(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("marker", Integer, nullable=False, unique=True),
        Column("key", Uuid, nullable=True),
        Column("at", UtcDateTime(), nullable=True),
        Column("on", Date, nullable=True),
        Column("flag", Boolean, nullable=True),
        Column("amount", Numeric(9, 4), nullable=True),
        Column("label", String(50), nullable=True),
        Column("doc", JSON, nullable=True),
    )


FAST, CORE = _table("bulk_fast"), _table("bulk_core")
WITH_DEFAULT = Table(
    "bulk_default",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("n", Integer, default=7),
)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_of(request.param, tmp_path, migrated=False) as database:
        metadata.create_all(database.engine)
        yield database


def _rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    moment = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
    rows = []
    for i in range(start, start + count):
        rows.append(
            {
                "marker": i,
                "key": uuid.UUID(int=i * 7919 + 1),
                "at": moment + timedelta(minutes=i) if i % 3 else None,
                "on": date(2020, 1, 1) + timedelta(days=i),
                "flag": [True, False, None][i % 3],
                "amount": Decimal(i) / 8,
                "label": f"label {i} – ü ☃" if i % 2 else None,
                "doc": {"i": i, "nested": [1.5, None, "é"], "empty": {}} if i % 4 else None,
            }
        )
    return rows


def _stored(db: Database, table: Table) -> list[tuple[Any, ...]]:
    """The rows as the driver hands them back, without SQLAlchemy's result processing."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns if c.name != "id")
    with db.engine.connect() as connection:
        sql = f"SELECT {columns} FROM {table.name} ORDER BY marker"
        return [tuple(row) for row in connection.exec_driver_sql(sql)]


def test_rows_are_stored_exactly_as_sqlalchemys_executemany_stores_them(db: Database) -> None:
    rows = _rows(40)
    with db.engine.begin() as connection:
        ids = insert_rows(connection, FAST, rows, returning="id")
        connection.execute(insert(CORE), rows)
    assert _stored(db, FAST) == _stored(db, CORE)
    with db.engine.connect() as connection:
        read = {m: i for i, m in connection.execute(select(FAST.c.id, FAST.c.marker))}
        assert [read[row["marker"]] for row in rows] == ids  # each id is its own row's
        typed = connection.execute(select(FAST).order_by(FAST.c.marker)).mappings().all()
    assert [{k: v for k, v in r.items() if k != "id"} for r in typed] == rows


def test_without_returning_nothing_is_returned_and_the_rows_are_there(db: Database) -> None:
    with db.engine.begin() as connection:
        assert insert_rows(connection, FAST, _rows(5)) == []
        assert insert_rows(connection, FAST, []) == []
    assert len(_stored(db, FAST)) == 5


def test_a_duplicate_is_sqlalchemys_integrity_error_and_a_savepoint_survives_it(
    db: Database,
) -> None:
    with db.engine.begin() as connection:
        insert_rows(connection, FAST, _rows(3), returning="id")
        savepoint = connection.begin_nested()
        with pytest.raises(IntegrityError):
            insert_rows(connection, FAST, _rows(2, start=2), returning="id")
        savepoint.rollback()
        insert_rows(connection, FAST, _rows(2, start=3))
    assert [row[0] for row in _stored(db, FAST)] == [0, 1, 2, 3, 4]


def test_statement_listeners_see_each_statement(db: Database) -> None:
    seen: list[tuple[str, bool]] = []

    def listener(
        _conn: object, _cursor: object, statement: str, _params: object, _ctx: object, many: bool
    ) -> None:
        seen.append((statement, many))

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        with db.engine.begin() as connection:
            insert_rows(connection, FAST, _rows(2), returning="id")
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert [many for statement, many in seen if "INSERT INTO bulk_fast" in statement] == [True]


def test_rows_of_other_shapes_and_python_side_defaults_are_refused(db: Database) -> None:
    with db.engine.begin() as connection:
        with pytest.raises(ValueError, match="same columns"):
            insert_rows(connection, FAST, [_rows(1)[0], {"marker": 9}])
        with pytest.raises(ValueError, match="must supply n"):
            insert_rows(connection, WITH_DEFAULT, [{"id": 1}])
        insert_rows(connection, WITH_DEFAULT, [{"id": 1, "n": 2}])
        assert connection.execute(text("SELECT n FROM bulk_default")).scalar() == 2
