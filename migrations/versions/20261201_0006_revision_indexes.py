"""covering indexes for a patient's revision: (patient_id, version) on assessments and treatments

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

The outcomes cache keys an answer by the patient's revision: the count and the version sum of
their assessments and treatments (app/services/outcomes_cache.py), read on every outcomes
request. Without these indexes the sum reads every record's row (with its JSON); with them both
aggregates are answered from the index alone.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_assessments_patient_version", "assessments", ["patient_id", "version"])
    op.create_index("ix_treatments_patient_version", "treatments", ["patient_id", "version"])


def downgrade() -> None:
    op.drop_index("ix_treatments_patient_version", table_name="treatments")
    op.drop_index("ix_assessments_patient_version", table_name="assessments")
