"""Per-worker guards in front of every request: a short-lived cache of verified keys and a
token-bucket rate limiter. Both live in one process's memory (see the README on scale-out)."""

from __future__ import annotations

import time
import uuid

from app.auth.access import Access
from app.errors import RateLimited


class RateLimiter:
    """A token bucket per API key, in this worker's memory (so the limit is per worker)."""

    def __init__(
        self, per_minute: int, what: str = "requests for this API key", max_buckets: int = 100_000
    ) -> None:
        self.per_minute = per_minute
        self.what = what
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str, cost: float = 1.0) -> None:
        """Take `cost` tokens (a batch costs more than one request: see the batch route)."""
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if len(self._buckets) >= self.max_buckets and key not in self._buckets:
            self._buckets.clear()  # bounded memory whatever the number of callers
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            raise RateLimited(
                f"more than {self.per_minute} {self.what} a minute",
                retry_after=max(1, int((cost - tokens) / rate + 0.999)),
            )
        self._buckets[key] = (tokens - cost, now)


class KeyCache:
    """Keys this worker verified recently: saves a database round trip (and a thread hop) on
    nearly every request. Only successful checks are kept, for `ttl` seconds, so a revoked key
    stops at once on the worker that revoked it and within `ttl` on the others."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Access, float]] = {}

    def get(self, token: str) -> Access | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            self._entries.pop(token, None)
            return None
        return entry[0]

    def put(self, token: str, access: Access) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token] = (access, time.monotonic() + self.ttl)

    def forget(self, key_id: uuid.UUID) -> None:
        for token, (access, _expires) in list(self._entries.items()):
            if access.key_id == key_id:
                self._entries.pop(token, None)
