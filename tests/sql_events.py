"""Watching what a piece of code asks of the database, for tests that count transactions or
statements (a saved round trip must stay saved): SQLAlchemy's own engine events, listened to
only for the `with` block."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event
from sqlalchemy.engine.default import CACHE_HIT


@contextmanager
def begun(engine: Engine) -> Iterator[list[object]]:
    """The transactions begun inside the block (one entry each)."""
    seen: list[object] = []

    def counted(*_args: object) -> None:
        seen.append(1)

    event.listen(engine, "begin", counted)
    try:
        yield seen
    finally:
        event.remove(engine, "begin", counted)


@contextmanager
def _watching(engine: Engine, seen: Callable[..., None]) -> Iterator[None]:
    """`seen` called with each statement's `before_cursor_execute` arguments in the block."""
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", seen)


@contextmanager
def statements(engine: Engine, wanted: Callable[[str], bool]) -> Iterator[list[str]]:
    """The SQL of the statements sent inside the block for which `wanted` holds."""
    found: list[str] = []

    def kept(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if wanted(statement):
            found.append(statement)

    with _watching(engine, kept):
        yield found


@contextmanager
def compiled_anew(engine: Engine) -> Iterator[list[str]]:
    """The SQL of the statements inside the block that SQLAlchemy compiled for that execution
    (not served from its compiled cache): on a hot path each costs about 0.1 ms. Plain driver
    SQL (`exec_driver_sql`: savepoints, the SQLite BEGIN) is never compiled and not listed."""
    found: list[str] = []

    def kept(
        _conn: object,
        _cursor: object,
        statement: str,
        _params: object,
        context: object,
        _many: object,
    ) -> None:
        compiled = getattr(context, "compiled", None) is not None
        if compiled and getattr(context, "cache_hit", None) is not CACHE_HIT:
            found.append(statement)

    with _watching(engine, kept):
        yield found
