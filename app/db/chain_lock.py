"""The lock that orders the audit trail's appends on PostgreSQL.

Each event's hash covers the previous event's, so appends must not interleave: a writer takes
this transaction-level advisory lock before it reads the chain's end, and holds it until commit
(so the event it read as "previous" is the last committed one). On SQLite the database's single
writer orders them instead.

The group writer takes it as the first statement of every write transaction it opens
(`app.db.group_commit`): all write transactions then take it before any row lock, so a group
holding it never waits for a row held by a transaction that waits for it (a deadlock), and the
events of the group's members need not take it again (`LOCKED` in their session's info).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

CHAIN_LOCK_KEY = 0x5053535F41554454  # "PSS_AUDT"
LOCKED = "audit.chain_locked"
"""`Session.info` key: this session's transaction holds the chain lock already."""

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def lock_chain(connection: Connection) -> None:
    """Take the chain lock for the rest of the connection's transaction (PostgreSQL only)."""
    connection.execute(_LOCK, {"key": CHAIN_LOCK_KEY})
