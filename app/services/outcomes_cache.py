"""Outcomes answers cached as response bytes, keyed by the patient's revision.

A patient's revision is `patients.revision`, bumped by database triggers on every INSERT and
UPDATE of the patient's assessments and treatments (migration 0007). Every write to a patient's
records is one of those (amendments and entered-in-error marks update the row; nothing is ever
deleted), and the triggers fire whoever writes, so no write path can forget to bump it. It is
read from the database on every request, with the access check's row, so the cache is correct
with several workers and replicas: each process caches what it computed, and a write anywhere
changes the key that every process looks up next. (It was derived before 0007, as the count and
version sum of the records, aggregated on every read: a cost that grew with the course.)

The revision is read before the records, in the same transaction: on PostgreSQL (read committed)
a write committing in between makes the records newer than the key, never older, so a cached
answer is never staler than its key.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Hashable

from sqlalchemy.orm import Session

from app.auth.access import Access
from app.db.models import Patient
from app.services.patients import patient_statements, reach_patient

Revision = int

# Built once: the access check and the revision in one round trip, with the patient's
# organization (which the read's audit event names).
_PROBE = patient_statements(Patient.organization_id, Patient.revision)


def reach_with_revision(session: Session, access: Access, patient_id: uuid.UUID) -> Revision:
    """The patient's revision; 404 (as `ensure_patient`) unless the caller may reach the
    patient."""
    row = reach_patient(session, access, patient_id, _PROBE)
    return int(row[1])


class BytesCache:
    """A per-process LRU of encoded answers, bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)

    @property
    def size(self) -> int:
        return self._size
