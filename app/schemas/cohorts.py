"""The cohort answers (SPEC section 8): Kaplan–Meier time to event, response rates per visit."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.scoring.cohort import CohortEvent, Imputation

WILSON_METHOD = "95 % Wilson score interval (no continuity correction; Newcombe 1998, method 3)"


class KaplanMeierStepOut(BaseModel):
    day: int = Field(
        description="Whole days from each patient's anchor (baseline, or the course start with "
        "treatment_agent); one row per day with an event or a censoring"
    )
    at_risk: int = Field(ge=0, description="Patients observed on or after this day")
    events: int = Field(ge=0, description="Patients with the event on this day")
    censored: int = Field(ge=0, description="Patients censored on this day (after the events)")
    survival: float = Field(
        ge=0, le=1, description="Probability of not yet having had the event just after this day"
    )
    ci_lower: float = Field(ge=0, le=1, description="Lower end of the 95 % interval of survival")
    ci_upper: float = Field(ge=0, le=1, description="Upper end of the 95 % interval of survival")


class TimeToEventOut(BaseModel):
    event: CohortEvent = Field(description="clearance, relapse, pasi50, pasi75 or pasi90")
    n: int = Field(
        ge=0,
        description="Patients who enter the estimate (relapse: only those with a qualifying "
        "response; a relative response: only those with a baseline PASI above 0)",
    )
    events: int = Field(ge=0, description="Patients with the event")
    censored: int = Field(ge=0, description="Patients censored at their follow-up so far")
    median_days: int | None = Field(
        description="First day the survival estimate is at most 0.5; null when not reached"
    )
    median_ci: tuple[int | None, int | None] = Field(
        description="95 % interval of the median: the first day the lower survival bound is at "
        "most 0.5, and the first day the upper bound is; each null when not reached"
    )
    steps: list[KaplanMeierStepOut]
    method: str = Field(description="How the estimate and its interval are computed")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "event": "clearance",
                    "n": 900,
                    "events": 640,
                    "censored": 260,
                    "median_days": 112,
                    "median_ci": [84, 140],
                    "steps": [
                        {
                            "day": 7,
                            "at_risk": 900,
                            "events": 12,
                            "censored": 0,
                            "survival": 0.98667,
                            "ci_lower": 0.9772,
                            "ci_upper": 0.9924,
                        }
                    ],
                    "method": "Kaplan–Meier; 95 % CI from Greenwood's variance on the "
                    "log(-log) scale",
                }
            ]
        }
    }


class TargetRateOut(BaseModel):
    responders: int = Field(ge=0, description="Patients meeting the target at this visit")
    proportion: float | None = Field(ge=0, le=1, description="responders / n; null when n is 0")
    ci_lower: float | None = Field(ge=0, le=1, description="Lower end of the 95 % Wilson interval")
    ci_upper: float | None = Field(ge=0, le=1, description="Upper end of the 95 % Wilson interval")


class VisitRatesOut(BaseModel):
    visit: str = Field(description='The visit label as recorded on the assessments ("Week 12")')
    median_day: float = Field(
        description="Median of the assessed patients' days from their anchor at this visit "
        "(a half day when their number is even); visits are ordered by it"
    )
    n: int = Field(ge=0, description="The denominator under the imputation")
    assessed: int = Field(ge=0, description="Patients with an assessment at this visit")
    rates: dict[str, TargetRateOut] = Field(description="One entry per requested target")


class ResponseRatesOut(BaseModel):
    imputation: Imputation = Field(
        description="observed: patients assessed at the visit; nri: every cohort patient, not "
        "assessed = non-responder; locf: last observation carried forward to the visit's "
        "median day"
    )
    targets: list[str] = Field(description="The targets, in the order asked for")
    patients: int = Field(ge=0, description="Patients in the cohort (with or without assessments)")
    visits: list[VisitRatesOut]
    method: str = Field(description="How the intervals are computed")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "imputation": "nri",
                    "targets": ["pasi75", "pasi90"],
                    "patients": 10,
                    "visits": [
                        {
                            "visit": "Week 12",
                            "median_day": 84.0,
                            "n": 10,
                            "assessed": 8,
                            "rates": {
                                "pasi75": {
                                    "responders": 6,
                                    "proportion": 0.6,
                                    "ci_lower": 0.3127,
                                    "ci_upper": 0.8318,
                                },
                                "pasi90": {
                                    "responders": 3,
                                    "proportion": 0.3,
                                    "ci_lower": 0.1078,
                                    "ci_upper": 0.6032,
                                },
                            },
                        }
                    ],
                    "method": WILSON_METHOD,
                }
            ]
        }
    }
