"""Opaque keyset cursors: the sort key of the last row, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from app.errors import InvalidParameter


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_datetime(value: Any) -> datetime:
    """A timestamp from a cursor: ISO 8601 with an offset, representable in UTC."""
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("no offset")
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        raise InvalidParameter("cursor", "is not a cursor this service issued") from None


def decode_cursor(cursor: str, length: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != length:
        raise InvalidParameter("cursor", "is not a cursor this service issued")
    return values
