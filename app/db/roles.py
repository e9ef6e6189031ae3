"""PostgreSQL: the service runs as a role that may only INSERT and SELECT on the audit and
history tables; migrations run as the tables' owner.

Not being the owner, the service role cannot ALTER the tables (so cannot disable their
append-only triggers), and it is granted neither UPDATE, DELETE nor TRUNCATE on them. Run
`grant_service_role` after every migration (the Alembic environment does it when
`DATABASE_SERVICE_ROLE` is set), so new tables are covered too.
"""

from __future__ import annotations

from sqlalchemy import Connection

from app.db.models import Base

APPEND_ONLY_TABLES = frozenset({"audit_events", "audit_event_patients", "record_versions"})


def grant_service_role(connection: Connection, role: str) -> None:
    quoted = connection.dialect.identifier_preparer.quote(role)
    connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {quoted}")
    for table in Base.metadata.sorted_tables:
        name = connection.dialect.identifier_preparer.quote(table.name)
        connection.exec_driver_sql(f"REVOKE ALL ON {name} FROM {quoted}")
        privileges = (
            "SELECT, INSERT"
            if table.name in APPEND_ONLY_TABLES
            else "SELECT, INSERT, UPDATE, DELETE"
        )
        connection.exec_driver_sql(f"GRANT {privileges} ON {name} TO {quoted}")
    connection.exec_driver_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
