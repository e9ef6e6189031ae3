"""Savepoints run as plain SQL on both databases (`app.db.database._plain_savepoints`): every
group-commit member and every baseline flag takes one, and SQLAlchemy, naming each anew,
compiled the statement for each on every use, at more cost than the member's own inserts.
They must still nest, release and roll back exactly as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text

from app.db.database import Database
from tests.dbs import BACKENDS, database_of

SAVEPOINTS = 200


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_of(request.param, tmp_path, migrated=False) as database:
        yield database


def test_savepoints_nest_release_and_roll_back_without_compiling_a_statement(
    db: Database,
) -> None:
    compiled: list[str] = []
    plain: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def _seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        context = _rest[-2]
        if "SAVEPOINT" in statement.upper():
            (plain if getattr(context, "compiled", None) is None else compiled).append(statement)

    insert = text("INSERT INTO t (n) VALUES (:n)")
    with db.transaction() as session:
        session.execute(insert, {"n": -1})
        for n in range(SAVEPOINTS):
            nested = session.begin_nested()
            session.execute(insert, {"n": n})
            inner = session.begin_nested()
            session.execute(insert, {"n": n + SAVEPOINTS})
            inner.rollback()  # the inner insert goes, the outer stays
            if n % 3 == 0:
                nested.rollback()
            else:
                nested.commit()
    with db.read() as session:
        stored = set(session.scalars(text("SELECT n FROM t")))
    assert stored == {-1} | {n for n in range(SAVEPOINTS) if n % 3}
    assert compiled == []
    # one SAVEPOINT per begin_nested, and one RELEASE or ROLLBACK TO for each
    assert len(plain) == 4 * SAVEPOINTS
