"""The audit trail's hash chain: each event's hash is SHA-256 over its canonical content and
the previous event's hash, so altering, removing or reordering any event breaks every link
after it. Pure (standard library only): the writer, the verifier and the migration that chained
the events written before it use this one definition, which must never change."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
"""The previous hash of the first event."""

CHAINED_FIELDS = (
    "occurred_at",
    "key_id",
    "key_name",
    "action",
    "method",
    "route",
    "status",
    "organization_id",
    "patient_id",
    "resource_type",
    "resource_id",
)


def _text(value: Any) -> Any:
    if value is None or isinstance(value, int | str):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)  # UUIDs: canonical lowercase, hyphenated


def canonical(event: Mapping[str, Any], patients: Iterable[tuple[Any, Any]]) -> bytes:
    """The event as canonical JSON: its chained fields, and the (patient, organization) pairs it
    touched, sorted, with sorted keys and no whitespace."""
    body = {name: _text(event.get(name)) for name in CHAINED_FIELDS}
    body["patients"] = sorted([str(p), _text(o)] for p, o in patients)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(
    prev_hash: str, event: Mapping[str, Any], patients: Iterable[tuple[Any, Any]]
) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(event, patients)).hexdigest()
