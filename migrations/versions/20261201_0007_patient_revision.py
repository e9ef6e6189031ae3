"""a stored per-patient revision, kept by triggers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

The outcomes cache keys an answer by the patient's revision, read on every outcomes request
(app/services/outcomes_cache.py). It was derived: the count and the version sum of the patient's
assessments and treatments, aggregated over the covering indexes of 0006 on every read, so a
cached read of a 1,000-assessment patient cost PostgreSQL about 0.2 ms more than one of a
10-assessment patient, inside the writer's serialized section. Now `patients.revision` is
bumped by triggers on every INSERT and UPDATE of an assessment or treatment (every write to a
record is one of those: history is append-only and nothing is deleted), so no write path, the
service's or a hand-written one, can forget it, and reading it is one column of the row the
access check reads anyway.

Row-level triggers on both databases. (Statement-level ones with transition tables were no
cheaper on PostgreSQL: a batch's rows reach it as one execution each, and a single-row insert
then paid for the transition table as well; a row trigger adds about 45 µs to an insert there.)
Existing patients start at 0: the cache is per process and starts empty, so no
answer cached under the derived revision can be read under the stored one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_TABLES = ("assessments", "treatments")
EVENTS = ("insert", "update")

_PG_FUNCTION = """
CREATE FUNCTION bump_patient_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE patients SET revision = revision + 1 WHERE id = NEW.patient_id;
    RETURN NULL;
END
$$
"""


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _trigger(table: str, event: str) -> str:
    return f"{table}_patient_revision_{event}"


def upgrade() -> None:
    op.add_column(
        "patients",
        sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0"),
    )
    if _is_pg():
        op.execute(_PG_FUNCTION)
    for table in RECORD_TABLES:
        for event in EVENTS:
            name = _trigger(table, event)
            if _is_pg():
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION bump_patient_revision()"
                )
            else:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} "
                    "BEGIN UPDATE patients SET revision = revision + 1 "
                    "WHERE id = NEW.patient_id; END"
                )


def downgrade() -> None:
    for table in RECORD_TABLES:
        for event in EVENTS:
            name = _trigger(table, event)
            op.execute(
                f"DROP TRIGGER IF EXISTS {name} ON {table}"
                if _is_pg()
                else f"DROP TRIGGER IF EXISTS {name}"
            )
    if _is_pg():
        op.execute("DROP FUNCTION IF EXISTS bump_patient_revision()")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("revision")
