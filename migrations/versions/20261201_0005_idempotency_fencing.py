"""idempotency keys: a fencing token per claim, and one key per owner whatever the path

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A key used to be unique per (owner, method, path, key), so one key could run on several
endpoints (and on several spellings of one patient id). It is now unique per (owner, key); the
method and canonical path it was first used for are checked on reuse (422). Where an owner had
used one key on several paths, only the latest use is kept: the older ones were past requests'
replay records, and they could not have been replayed under the new rule anyway.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM idempotency_keys WHERE id IN ("
        " SELECT older.id FROM idempotency_keys older JOIN idempotency_keys newer"
        " ON newer.owner = older.owner AND newer.key = older.key AND newer.id > older.id)"
    )
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.add_column(sa.Column("token", sa.String(length=32), nullable=True))
    op.execute("UPDATE idempotency_keys SET token = 'migrated-' || CAST(id AS VARCHAR(20))")
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.alter_column("token", existing_type=sa.String(length=32), nullable=False)
        batch_op.drop_constraint("uq_idempotency_keys_scope", type_="unique")
        batch_op.create_unique_constraint("uq_idempotency_keys_owner_key", ["owner", "key"])


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_constraint("uq_idempotency_keys_owner_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_idempotency_keys_scope", ["owner", "method", "path", "key"]
        )
        batch_op.drop_column("token")
