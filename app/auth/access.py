"""Who is calling and what they may reach: the one value every service takes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.auth.keys import ALL_SCOPES, Scope


@dataclass(frozen=True, slots=True)
class Access:
    """An authenticated caller. `name` is recorded as `recorded_by` on what they write.

    `organization_ids` are the organizations whose patients the caller may reach; None means
    every organization (an admin key, the operator's)."""

    key_id: uuid.UUID | None
    name: str
    scopes: frozenset[Scope]
    organization_ids: frozenset[uuid.UUID] | None = None

    @property
    def may_read(self) -> bool:
        return Scope.READ in self.scopes


DEV_ACCESS = Access(None, "auth-disabled", ALL_SCOPES)
"""The caller when authentication is disabled (development only) or scoring is open."""
