"""Readiness: can this worker reach its database right now?"""

from __future__ import annotations

from sqlalchemy import text

from app.db.database import Database


def database_reachable(db: Database) -> bool:
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # any failure means "not ready"; the probe says no more than that
        return False
    return True
