"""Opaque keyset cursors: the sort key of the last row, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

from app.errors import InvalidParameter


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_NOT_OURS = "is not a cursor this service issued"
_BIGINT_MAX = 2**63 - 1


def _forged() -> InvalidParameter:
    return InvalidParameter("cursor", _NOT_OURS)


def cursor_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise _forged()
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _forged() from None


def cursor_int(value: Any) -> int:
    """A row id from a cursor: a JSON integer (not a boolean) that fits the database's BIGINT."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _BIGINT_MAX:
        raise _forged()
    return value


def cursor_date(value: Any) -> date:
    if not isinstance(value, str):
        raise _forged()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _forged() from None


def cursor_datetime(value: Any) -> datetime:
    """A timestamp from a cursor: ISO 8601 with an offset, representable in UTC."""
    if not isinstance(value, str):
        raise _forged()
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("no offset")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _forged() from None


def utc_parameter(name: str, value: datetime | None) -> datetime | None:
    """A timestamp query parameter: it must carry an offset and be representable in UTC
    (0001-01-01T00:00:00+05:00 is not)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidParameter(name, "must include a time zone offset, e.g. 2026-01-01T00:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(
            name, "is out of range: it must fall between years 1 and 9999 in UTC"
        ) from None


def decode_cursor(cursor: str, length: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != length:
        raise _forged()
    return values
