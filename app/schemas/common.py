"""Field types shared by the request and response models."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Final, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EARLIEST_CLINICAL_DATE = date(1900, 1, 1)
# The latest calendar date anywhere on Earth (UTC+14, Line Islands).
_LATEST_ZONE = timezone(timedelta(hours=14))


def latest_date_on_earth() -> date:
    return datetime.now(UTC).astimezone(_LATEST_ZONE).date()


def _parse_iso_date(value: Any) -> Any:
    """Only `YYYY-MM-DD` strings: no timestamps, no week dates, no datetimes."""
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a real calendar date in the form YYYY-MM-DD") from None
    raise ValueError("must be a date in the form YYYY-MM-DD")


def _clinical_date(value: date) -> date:
    if value < EARLIEST_CLINICAL_DATE:
        raise ValueError("must not be before 1900-01-01")
    if value > latest_date_on_earth():
        raise ValueError("must not be in the future")
    return value


IsoDate = Annotated[
    date,
    BeforeValidator(_parse_iso_date),
    # No example: the Swagger UI would pre-fill date filters with it and find nothing.
    WithJsonSchema({"type": "string", "format": "date"}),
]
ClinicalDate = Annotated[IsoDate, AfterValidator(_clinical_date)]

MAX_DECIMAL_PLACES = 4


def _limited_precision(value: float) -> float:
    """Reject more decimals than the database keeps exactly (the scores are computed on the
    decimal the client wrote: the shortest repr of the float)."""
    if value.is_integer():  # most percentages: no decimals at all (the field is a strict float)
        return value
    exponent = as_decimal(value).as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        raise ValueError(f"must have at most {MAX_DECIMAL_PLACES} decimal places")
    return value


Percent = Annotated[
    float,
    Field(strict=True, ge=0, le=100, allow_inf_nan=False),
    AfterValidator(_limited_precision),
]


def as_decimal(value: float | Decimal) -> Decimal:
    """The decimal number the user wrote (the float's shortest repr); a whole number as an
    integer Decimal, the form the scoring core keeps, so it need not be normalised again."""
    if isinstance(value, Decimal):
        return value
    if type(value) is int or (isinstance(value, float) and value.is_integer()):
        return Decimal(int(value))
    return Decimal(repr(value))


def _no_nul_characters(value: str) -> str:
    # Valid JSON, but PostgreSQL text cannot hold U+0000: refuse it on every database alike.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


NO_NUL: Final = AfterValidator(_no_nul_characters)
"""Every text field of a request body carries this in its `Annotated`: `tests/test_schema_text.py`
fails for a `str` of a `StrictInput` model without it. On the text fields only, not on every
field: a validator on all (`"*"`) cost each scoring request 22 calls into Python, none of them
on text."""


class StrictInput(BaseModel):
    """Request bodies: unknown fields are rejected so a misspelt field cannot vanish; text
    fields refuse U+0000 (`NO_NUL`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description='Validation errors: `{"pointer": "/pasi/trunk/erythema", "detail": "..."}` '
        'for body fields, `{"parameter": "clearance", "in": "query", "detail": "..."}` otherwise.',
    )
    patient_id: str | None = Field(default=None, description="On 409 identifier-in-use.")

    model_config = ConfigDict(extra="allow")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem+json answers."""
    descriptions = {
        400: "Malformed request (not JSON, NaN/Infinity, bad UTF-8)",
        401: "Missing or invalid API key",
        403: "The API key lacks the required scope",
        404: "Not found",
        409: "Conflict",
        412: "If-Match does not match the current ETag",
        413: "Request body larger than 1 MiB",
        415: "Body is not application/json",
        422: "Invalid input: `errors` names each field and the rule it breaks",
        428: "If-Match header required",
        429: "Rate limit exceeded (see Retry-After)",
    }
    return {
        status: {
            "description": descriptions[status],
            # Problem is registered in components by the /readyz route's 503 response.
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in statuses
    }
