"""Patients, assessments and treatments: what clients send and what the service returns."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from app.schemas.common import NO_NUL, ClinicalDate, IsoDate, StrictInput, latest_date_on_earth
from app.schemas.scores import ClinicalScoresIn, DlqiIn, PasiIn, Scores

ShortText = Annotated[str, Field(min_length=1, max_length=100), NO_NUL]
Reason = Annotated[
    str, Field(min_length=1, max_length=1000, description="Why (1–1000 characters)"), NO_NUL
]
Notes = Annotated[str, Field(max_length=4000), NO_NUL]


def _plain_text(value: str) -> str:
    """Identifiers are compared and searched as text: normalise them to NFC (so that one
    identifier has one spelling) and refuse characters that make two look alike or hide part
    of one: controls, zero-width characters and bidirectional overrides."""
    value = unicodedata.normalize("NFC", value)
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn") or char in "\u2028\u2029":
            raise ValueError(
                f"must not contain control, format or invisible characters (U+{ord(char):04X})"
            )
    return value


class Identifier(StrictInput):
    system: Annotated[str, Field(min_length=1, max_length=255), NO_NUL] = Field(
        description="Namespace of the identifier, e.g. `https://hospital.example/mrn` (a URI); "
        "no `|` (it separates system and value in searches)"
    )
    value: Annotated[str, Field(min_length=1, max_length=255), NO_NUL] = Field(
        description="The identifier"
    )

    @field_validator("system")
    @classmethod
    def _searchable_system(cls, value: str) -> str:
        value = _plain_text(value)
        if "|" in value:
            raise ValueError("must not contain `|`: `system|value` searches could never find it")
        return value

    @field_validator("value")
    @classmethod
    def _plain_value(cls, value: str) -> str:
        return _plain_text(value)


class PatientIn(StrictInput):
    """No names or other direct identifiers: only external identifiers, sex and year of birth."""

    identifiers: list[Identifier] = Field(min_length=1, max_length=20)
    sex: Literal["female", "male", "other", "unknown"] | None = None
    birth_year: Annotated[int, Field(strict=True, ge=1900, le=2100)] | None = Field(
        default=None, description="Year of birth (not after the current year)"
    )
    organization_id: uuid.UUID | None = Field(
        default=None,
        description="The organization (clinic, study) the patient belongs to; may be left out "
        "when the API key holds exactly one",
    )

    @field_validator("birth_year")
    @classmethod
    def _not_future(cls, value: int | None) -> int | None:
        if value is not None and value > latest_date_on_earth().year:
            raise ValueError("must not be after the current year")
        return value

    @field_validator("identifiers")
    @classmethod
    def _distinct(cls, value: list[Identifier]) -> list[Identifier]:
        pairs = [(i.system, i.value) for i in value]
        if len(set(pairs)) != len(pairs):
            raise ValueError("must not repeat an identifier")
        return value


class PatientOut(BaseModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    identifiers: list[Identifier]
    sex: str | None
    birth_year: int | None
    created_at: datetime
    created_by: str


class AssessmentIn(ClinicalScoresIn):
    """One dated assessment: PASI inputs (required) and optionally IGA, measured BSA and DLQI."""

    assessed_on: ClinicalDate = Field(
        description="Clinical date (YYYY-MM-DD), not in the future anywhere on Earth, "
        "not before 1900"
    )
    visit: ShortText | None = Field(default=None, description='Visit label, e.g. "Week 12"')
    assessor: ShortText | None = None
    is_baseline: Annotated[bool, Field(strict=True)] = Field(
        default=False, description="Flag this as the patient's baseline (at most one active)"
    )
    notes: Notes | None = None


class AssessmentAmend(AssessmentIn):
    """The full clinical content, as in POST, plus why it changes."""

    reason: Reason


class ReasonIn(StrictInput):
    reason: Reason


class AssessmentContent(BaseModel):
    assessed_on: IsoDate
    visit: str | None
    assessor: str | None
    is_baseline: bool
    notes: str | None
    pasi: PasiIn
    iga: int | None
    bsa_percent: float | None
    dlqi: DlqiIn | None


class AssessmentOut(AssessmentContent):
    id: uuid.UUID
    patient_id: uuid.UUID
    version: int
    status: Literal["active", "entered-in-error"]
    recorded_at: datetime = Field(description="When first recorded (server time, UTC)")
    updated_at: datetime
    scores: Scores


class VersionOut(BaseModel):
    version: int
    action: Literal["create", "amend", "entered-in-error"]
    recorded_at: datetime
    recorded_by: str
    reason: str | None
    status: Literal["active", "entered-in-error"]


class AssessmentVersionOut(VersionOut, AssessmentContent):
    scores: Scores | None


class DoseIn(StrictInput):
    given_on: IsoDate
    amount: Annotated[float, Field(strict=True, gt=0, le=1e15, allow_inf_nan=False)] = Field(
        description="Amount given, in `unit`"
    )
    unit: Annotated[str, Field(min_length=1, max_length=50), NO_NUL] = Field(
        description='Unit, e.g. "cells/kg" or "mg"'
    )


class TreatmentIn(StrictInput):
    agent: Annotated[str, Field(min_length=1, max_length=200), NO_NUL]
    started_on: ClinicalDate
    ended_on: ClinicalDate | None = Field(default=None, description="Not before started_on")
    doses: list[DoseIn] = Field(default_factory=list, max_length=1000)
    notes: Notes | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> TreatmentIn:
        if self.ended_on is not None and self.ended_on < self.started_on:
            raise ValueError("ended_on must not be before started_on")
        return self


class TreatmentAmend(TreatmentIn):
    reason: Reason


class TreatmentContent(BaseModel):
    agent: str
    started_on: IsoDate
    ended_on: IsoDate | None
    doses: list[DoseIn]
    notes: str | None


class TreatmentOut(TreatmentContent):
    id: uuid.UUID
    patient_id: uuid.UUID
    version: int
    status: Literal["active", "entered-in-error"]
    recorded_at: datetime
    updated_at: datetime


class TreatmentVersionOut(VersionOut, TreatmentContent):
    pass
