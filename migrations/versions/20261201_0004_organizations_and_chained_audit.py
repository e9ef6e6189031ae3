"""organizations, per-organization identifiers, keys bound to organizations, a complete and
hash-chained audit

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Upgrading puts every existing patient into an organization named `default` and binds every
existing non-admin key to it (SPEC section 6). Identifiers become unique per organization.
Audit events gain the key's id, the organization, the patients they touched (a child table) and
a SHA-256 chain; the events written before this migration are chained here, in id order, with
the one definition in `app.db.audit_chain`.

Downgrade refuses nothing but cannot restore global identifier uniqueness if two organizations
now share an identifier (the unique constraint then fails: resolve the duplicates first).
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from app.db.audit_chain import GENESIS, chain_hash
from app.db.models import DEFAULT_ORGANIZATION_NAME, UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("audit_events", "record_versions", "audit_event_patients")


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _drop_append_only(table: str) -> None:
    if _is_pg():
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only")


def _create_append_only(table: str) -> None:
    # The function refuse_change_to_append_only() is created by migration 0002.
    if _is_pg():
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END"
        )


_events = sa.table(
    "audit_events",
    sa.column("id", sa.Integer()),
    sa.column("occurred_at", UtcDateTime()),
    sa.column("key_id", sa.Uuid()),
    sa.column("key_name", sa.String()),
    sa.column("action", sa.String()),
    sa.column("method", sa.String()),
    sa.column("route", sa.String()),
    sa.column("patient_id", sa.Uuid()),
    sa.column("resource_type", sa.String()),
    sa.column("resource_id", sa.Uuid()),
    sa.column("status", sa.Integer()),
    sa.column("organization_id", sa.Uuid()),
    sa.column("prev_hash", sa.String()),
    sa.column("chain_hash", sa.String()),
)
_event_patients = sa.table(
    "audit_event_patients",
    sa.column("event_id", sa.Integer()),
    sa.column("patient_id", sa.Uuid()),
    sa.column("organization_id", sa.Uuid()),
)
_patients = sa.table("patients", sa.column("id", sa.Uuid()), sa.column("organization_id", sa.Uuid()))
_keys = sa.table(
    "api_keys", sa.column("id", sa.Uuid()), sa.column("name", sa.String()), sa.column("scopes", sa.String())
)


def _chain_existing_events(default_org: uuid.UUID) -> None:
    bind = op.get_bind()
    key_ids = {name: key_id for key_id, name, _s in bind.execute(sa.select(_keys))}
    org_of = dict(bind.execute(sa.select(_patients.c.id, _patients.c.organization_id)).all())
    prev = GENESIS
    rows = bind.execute(sa.select(_events).order_by(_events.c.id)).mappings().all()
    for row in rows:
        event = dict(row)
        event["key_id"] = key_ids.get(event["key_name"])
        patients = []
        if event["patient_id"] is not None:
            patients = [(event["patient_id"], org_of.get(event["patient_id"]))]
            bind.execute(
                sa.insert(_event_patients).values(
                    event_id=event["id"],
                    patient_id=event["patient_id"],
                    organization_id=patients[0][1],
                )
            )
        orgs = {o for _p, o in patients}
        event["organization_id"] = orgs.pop() if len(orgs) == 1 else None
        digest = chain_hash(prev, event, patients)
        bind.execute(
            sa.update(_events)
            .where(_events.c.id == event["id"])
            .values(
                key_id=event["key_id"],
                organization_id=event["organization_id"],
                prev_hash=prev,
                chain_hash=digest,
            )
        )
        prev = digest


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("name", name=op.f("uq_organizations_name")),
    )
    default_org = uuid.uuid4()
    organizations = sa.table(
        "organizations",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("created_at", UtcDateTime()),
    )
    op.execute(
        sa.insert(organizations).values(
            id=default_org, name=DEFAULT_ORGANIZATION_NAME, created_at=datetime.now(UTC)
        )
    )

    op.create_table(
        "api_key_organizations",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"],
            name=op.f("fk_api_key_organizations_key_id_api_keys"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"],
            name=op.f("fk_api_key_organizations_organization_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("key_id", "organization_id", name=op.f("pk_api_key_organizations")),
    )
    with op.batch_alter_table("api_key_organizations") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_key_organizations_organization_id"), ["organization_id"]
        )
    bind = op.get_bind()
    links = sa.table(
        "api_key_organizations", sa.column("key_id", sa.Uuid()), sa.column("organization_id", sa.Uuid())
    )
    for key_id, _name, scopes in bind.execute(sa.select(_keys)).all():
        if "admin" not in scopes.split():
            bind.execute(sa.insert(links).values(key_id=key_id, organization_id=default_org))

    # Patients and their identifiers belong to an organization.
    with op.batch_alter_table("patients") as batch_op:
        batch_op.add_column(sa.Column("organization_id", sa.Uuid(), nullable=True))
    op.execute(sa.update(_patients).values(organization_id=default_org))
    with op.batch_alter_table("patients") as batch_op:
        batch_op.alter_column("organization_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_patients_organization_id_organizations"),
            "organizations", ["organization_id"], ["id"], ondelete="RESTRICT",
        )
        batch_op.create_index(batch_op.f("ix_patients_organization_id"), ["organization_id"])

    identifiers = sa.table("patient_identifiers", sa.column("organization_id", sa.Uuid()))
    with op.batch_alter_table("patient_identifiers") as batch_op:
        batch_op.add_column(sa.Column("organization_id", sa.Uuid(), nullable=True))
    op.execute(sa.update(identifiers).values(organization_id=default_org))
    with op.batch_alter_table("patient_identifiers") as batch_op:
        batch_op.alter_column("organization_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_patient_identifiers_organization_id_organizations"),
            "organizations", ["organization_id"], ["id"], ondelete="RESTRICT",
        )
        batch_op.drop_constraint("uq_patient_identifiers_system_value", type_="unique")
        batch_op.create_unique_constraint(
            "uq_patient_identifiers_org_system_value", ["organization_id", "system", "value"]
        )
        batch_op.create_index("ix_patient_identifiers_system_value", ["system", "value"])

    # The audit: key id, organization, touched patients, and the chain.
    _drop_append_only("audit_events")
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("organization_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("chain_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_events_key_id"), ["key_id"])
    op.create_table(
        "audit_event_patients",
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["audit_events.id"],
            name=op.f("fk_audit_event_patients_event_id_audit_events"), ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("event_id", "patient_id", name=op.f("pk_audit_event_patients")),
    )
    with op.batch_alter_table("audit_event_patients") as batch_op:
        batch_op.create_index("ix_audit_event_patients_patient", ["patient_id", "event_id"])
    _chain_existing_events(default_org)
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("chain_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_events_chain_hash"), ["chain_hash"])
    _create_append_only("audit_events")
    _create_append_only("audit_event_patients")


def downgrade() -> None:
    _drop_append_only("audit_event_patients")
    op.drop_table("audit_event_patients")
    _drop_append_only("audit_events")
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_events_chain_hash"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_audit_events_key_id"))
        batch_op.drop_column("chain_hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("organization_id")
        batch_op.drop_column("key_id")
    _create_append_only("audit_events")

    with op.batch_alter_table("patient_identifiers") as batch_op:
        batch_op.drop_index("ix_patient_identifiers_system_value")
        batch_op.drop_constraint("uq_patient_identifiers_org_system_value", type_="unique")
        batch_op.create_unique_constraint(
            "uq_patient_identifiers_system_value", ["system", "value"]
        )
        batch_op.drop_constraint(
            batch_op.f("fk_patient_identifiers_organization_id_organizations"), type_="foreignkey"
        )
        batch_op.drop_column("organization_id")
    with op.batch_alter_table("patients") as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_organization_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_patients_organization_id_organizations"), type_="foreignkey"
        )
        batch_op.drop_column("organization_id")
    with op.batch_alter_table("api_key_organizations") as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_key_organizations_organization_id"))
    op.drop_table("api_key_organizations")
    op.drop_table("organizations")
