"""Alembic environment: the same settings and metadata as the app."""

from __future__ import annotations

import os

from alembic import context

from app.db.database import create_db_engine
from app.db.models import Base
from app.db.roles import grant_service_role
from app.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("database_url") or get_settings().effective_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(_url())
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations rebuild SQLite tables (copy, drop, rename); with foreign keys
                # on, dropping a referenced table fails. The pragma only works outside a
                # transaction, so it is set on the driver connection (in autocommit mode) before
                # Alembic begins, and the keys are checked before the migration commits.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            context.configure(
                connection=conn, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
                service_role = config.attributes.get("service_role") or os.environ.get(
                    "DATABASE_SERVICE_ROLE", ""
                )
                if service_role and not sqlite:
                    grant_service_role(conn, service_role)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"foreign keys broken by the migration: {broken[:5]}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
