"""Batch upload (SPEC 7): up to 1,000 assessments for any patients of the key's organizations.

Each item's `patient` and `assessment` are validated item by item (a bad item is that item's
422, not the whole request's), so the envelope takes them as objects and
`app.services.batch` validates them against `BatchPatient` and `AssessmentIn`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from app.schemas.common import NO_NUL, StrictInput
from app.schemas.records import Identifier

MAX_ITEMS = 1000


class NewPatient(StrictInput):
    """What `create` gives a patient that does not exist yet (its identifier is the item's)."""

    sex: Literal["female", "male", "other", "unknown"] | None = None
    birth_year: Annotated[int, Field(strict=True, ge=1900, le=2100)] | None = None


class BatchPatient(StrictInput):
    """`{"id": ...}` or `{"identifier": {...}}`, with optional `create` (and `organization_id`
    when the key holds several organizations)."""

    id: uuid.UUID | None = None
    identifier: Identifier | None = None
    create: NewPatient | None = None
    organization_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> BatchPatient:
        if (self.id is None) == (self.identifier is None):
            raise ValueError("give exactly one of `id` and `identifier`")
        if self.id is not None and (self.create is not None or self.organization_id is not None):
            raise ValueError("`create` and `organization_id` go with `identifier` only")
        return self


ItemKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$"), NO_NUL]


class BatchItem(StrictInput):
    key: ItemKey | None = Field(
        default=None,
        description="The item's idempotency key (printable ASCII): a replay returns the item's "
        "first result with `replayed: true` and stores nothing new",
    )
    patient: dict[str, Any] = Field(
        description='`{"id": "<uuid>"}` or `{"identifier": {"system": ..., "value": ...}, '
        '"create": {"sex": ..., "birth_year": ...}, "organization_id": ...}`'
    )
    assessment: dict[str, Any] = Field(
        description="The body `POST /v1/patients/{patient_id}/assessments` takes"
    )


class BatchIn(StrictInput):
    mode: Literal["per_item", "all_or_nothing"] = Field(
        default="per_item",
        description="`per_item`: each item stands alone (200 with each item's status); "
        "`all_or_nothing`: every item is stored or none (422 naming the failing items)",
    )
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_ITEMS)


class BatchResult(BaseModel):
    index: int
    status: int
    patient_id: uuid.UUID | None = None
    assessment_id: uuid.UUID | None = None
    replayed: bool | None = None
    problem: dict[str, Any] | None = Field(
        default=None, description="An RFC 9457 problem; its pointers start `/items/<index>/`"
    )


class BatchOut(BaseModel):
    mode: Literal["per_item", "all_or_nothing"]
    results: list[BatchResult]
