"""The `GET /v1/patients/{id}/outcomes` answer (SPEC section 4 shape, plus notes)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from app.scoring.outcomes import ClearanceCriterion, RelapseDefinition


class AssessmentPoint(BaseModel):
    assessment_id: uuid.UUID
    assessed_on: date
    pasi: float
    bsa_percent: float | None


class ChangeOut(BaseModel):
    pasi_absolute: float = Field(description="Latest PASI − baseline PASI (negative = better)")
    percent_improvement: float | None = Field(
        description="(baseline − latest) / baseline × 100, one decimal; null when baseline is 0"
    )
    bsa_absolute: float | None
    note: str | None = None


class TargetOut(BaseModel):
    reached_now: bool | None
    first_reached_on: date | None
    days: int | None = Field(description="Whole days from the anchor")
    note: str | None = None


class ClearanceOut(BaseModel):
    criterion: ClearanceCriterion
    cleared_on: date | None
    days_to_clearance: int | None
    censored: bool | None
    days_observed: int
    lasted_days: int | None
    ongoing: bool | None
    note: str | None = None


class RelapseOut(BaseModel):
    definition: RelapseDefinition
    threshold: float | None = Field(description="The pasi_above threshold (PASI), else null")
    evaluable_from: date | None
    relapsed_on: date | None
    days_to_relapse: int | None
    relapse_free_days: int | None
    censored: bool | None
    note: str | None = None


class ReboundOut(BaseModel):
    treatment_id: uuid.UUID | None
    treatment_ended_on: date | None
    window_days: int
    rebounded: bool | None
    rebound_on: date | None
    days_after_end: int | None
    note: str | None = None


class EpisodeOut(BaseModel):
    responded_on: date
    best_pasi: float
    best_on: date
    cleared_on: date | None
    relapsed_on: date | None


class SeriesPointOut(BaseModel):
    assessment_id: uuid.UUID
    assessed_on: date
    visit: str | None = Field(
        description='The assessment\'s visit label as recorded ("Baseline", "Week 12"), or null'
    )
    days: int
    weeks: float = Field(description="days / 7, for display")
    pasi: float
    bsa_percent: float | None
    iga: int | None
    percent_improvement: float | None
    counts: bool = Field(description="False for assessments before the baseline")


class OutcomesOut(BaseModel):
    anchor: Literal["baseline", "treatment"]
    anchor_on: date
    treatment_id: uuid.UUID | None
    baseline: AssessmentPoint
    latest: AssessmentPoint
    change: ChangeOut
    responses: dict[str, TargetOut] = Field(
        description="pasi50, pasi75, pasi90, pasi100 (relative) and pasi_le_1, pasi_le_2, "
        "pasi_le_3, pasi_le_5 (absolute)"
    )
    clearance: ClearanceOut
    relapse: RelapseOut
    episodes: list[EpisodeOut]
    rebound: ReboundOut | None
    series: list[SeriesPointOut]
    notes: list[str]
