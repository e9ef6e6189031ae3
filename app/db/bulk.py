"""`insert_rows`: many rows of one table inserted through the driver's cursor, with the statement
compiled once per dialect by SQLAlchemy and every value converted by the bind processors
SQLAlchemy itself would apply (docs/decisions/0015-inserts-through-the-driver.md).

Why: on PostgreSQL, SQLAlchemy sends an executemany with RETURNING (the audit events, whose ids
the patient links need) as one INSERT of all the rows' values ("insertmanyvalues"): a new
statement text for every number of rows, with more parameters than psycopg keeps parsed
(`_query2pg_nocache`), so psycopg parses it again on every append, in Python, while the chain's
lock is held. Here psycopg gets one short statement per table, parsed once, and runs the rows in
one pipeline (`executemany(..., returning=True)`, one result per row, in order). The values are
those SQLAlchemy would send (the engine's JSON serializer, `Uuid`, `UtcDateTime`, booleans), so
what is stored is the same, byte for byte; `before_cursor_execute` listeners still see each
statement, and a driver error is raised as SQLAlchemy's own (an `IntegrityError` stays one; a
lost connection is invalidated) by the connection's own error handling.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the row keys, in the statement's parameter order
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool  # qmark/format: a tuple per row; named/pyformat: a dict per row


class FastInsert:
    """`INSERT INTO table (columns) VALUES (...)` for rows that each have exactly `columns` as
    keys; `returning`: a column the database assigns (an autoincrement id), returned for each
    row in the rows' order. Refused when built: a column with a Python-side default the rows do
    not supply (SQLAlchemy would compute it per row)."""

    def __init__(self, table: Table, columns: Sequence[str], returning: str | None = None) -> None:
        self._table = table
        self._columns = tuple(columns)
        self._returning = returning
        # Per dialect, held weakly: a test session makes an engine (and a dialect) per app.
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def _compile(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect)
        if found is not None:
            return found
        statement = insert(self._table)
        if self._returning is not None:
            statement = statement.returning(self._table.c[self._returning])
        compiled = statement.compile(dialect=dialect, column_keys=list(self._columns))
        if compiled.insert_prefetch:
            missing = ", ".join(column.key for column in compiled.insert_prefetch)
            raise ValueError(f"{self._table.name}: the rows must supply {missing}")
        positional = bool(compiled.positional)
        names = tuple(compiled.positiontup or ()) if positional else self._columns
        if set(names) - set(self._columns):
            raise ValueError(f"{self._table.name}: the statement wants other parameters")
        escaped = compiled.escaped_bind_names
        if escaped and any(escaped.get(name, name) != name for name in names):
            raise ValueError(f"{self._table.name}: escaped parameter names are not supported")
        processors: list[Callable[[Any], Any] | None] = []
        for name in names:
            processor = compiled._bind_processors.get(name)
            if processor is not None and not callable(processor):  # a tuple type's, per element
                raise ValueError(f"{self._table.name}.{name}: tuple-typed values are not supported")
            processors.append(processor)
        found = _Compiled(
            sql=compiled.string, names=names, processors=tuple(processors), positional=positional
        )
        self._compiled[dialect] = found
        return found

    @staticmethod
    def _parameters(compiled: _Compiled, rows: Sequence[dict[str, Any]]) -> list[Any]:
        pairs = tuple(zip(compiled.names, compiled.processors, strict=True))
        if compiled.positional:
            return [
                tuple(row[name] if p is None else p(row[name]) for name, p in pairs) for row in rows
            ]
        return [
            {name: row[name] if p is None else p(row[name]) for name, p in pairs} for row in rows
        ]

    def run(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """Insert `rows` in the connection's transaction; the `returning` column's values in
        order (empty without `returning`)."""
        if not rows:
            return []
        compiled = self._compile(connection.dialect)
        parameters = self._parameters(compiled, rows)
        cursor = connection.connection.cursor()  # the DBAPI connection of this transaction
        try:
            for listener in connection.dispatch.before_cursor_execute:
                listener(connection, cursor, compiled.sql, parameters, None, True)
            try:
                return self._execute(connection.dialect.name, cursor, compiled, parameters)
            except connection.dialect.loaded_dbapi.Error as error:
                # Raises SQLAlchemy's own error (and invalidates a lost connection).
                connection._handle_dbapi_exception(error, compiled.sql, parameters, cursor, None)
                raise  # not reached
        finally:
            cursor.close()

    def _execute(
        self, dialect: str, cursor: Any, compiled: _Compiled, parameters: list[Any]
    ) -> list[Any]:
        if self._returning is None:
            cursor.executemany(compiled.sql, parameters)
            return []
        values = []
        if dialect == "postgresql":  # one pipeline; psycopg keeps each row's result, in order
            cursor.executemany(compiled.sql, parameters, returning=True)
            while True:
                values.append(cursor.fetchone()[0])
                if not cursor.nextset():
                    return values
        for row in parameters:  # SQLite's executemany keeps no result: a row at a time
            cursor.execute(compiled.sql, row)
            values.append(cursor.fetchone()[0])
        return values


_INSERTS: dict[tuple[Table, tuple[str, ...], str | None], FastInsert] = {}


def insert_rows(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: str | None = None,
) -> list[Any]:
    """`FastInsert(table, <the rows' keys>, returning).run(connection, rows)`, kept per table,
    columns and `returning`. Every row must have the same keys, as an executemany requires."""
    if not rows:
        return []
    first = rows[0].keys()
    if any(row.keys() != first for row in rows):
        raise ValueError(f"{table.name}: every row must have the same columns")
    columns = tuple(first)
    found = _INSERTS.get((table, columns, returning))
    if found is None:
        found = _INSERTS[(table, columns, returning)] = FastInsert(table, columns, returning)
    return found.run(connection, rows)
