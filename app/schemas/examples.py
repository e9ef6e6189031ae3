"""Worked examples for the Swagger UI, as OpenAPI Example objects on each request body.

They live on the operations (`Body(openapi_examples=...)`), not on the models: pydantic sorts a
model's JSON-schema examples alphabetically (head, lower limbs, trunk, upper limbs; area before
erythema), while these keep clinical order: regions head and neck, upper limbs, trunk, lower
limbs; signs erythema, induration, desquamation, then area. Each runs as pre-filled (a test
executes every one)."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

from app.schemas.scores import PASI_EXAMPLE

# PASI 28.7 at baseline (the README's example), 5.7 at week 12: a PASI 75 response (80.1 %).
PASI_WEEK_12: dict[str, Any] = {
    "head_neck": {"erythema": 1, "induration": 1, "desquamation": 1, "area_score": 1},
    "upper_limbs": {"erythema": 1, "induration": 1, "desquamation": 1, "area_score": 2},
    "trunk": {"erythema": 1, "induration": 1, "desquamation": 1, "area_score": 2},
    "lower_limbs": {"erythema": 1, "induration": 1, "desquamation": 1, "area_score": 2},
}


def _example(summary: str, value: dict[str, Any], description: str | None = None) -> Example:
    example: Example = {"summary": summary, "value": value}
    if description:
        example["description"] = description
    return example


PASI_SCORE = {
    "four_regions": _example("Four regions, IGA 4 (PASI 28.7)", {"pasi": PASI_EXAMPLE, "iga": 4}),
}
BSA_SCORE = {
    "regional": _example(
        "BSA from regional percentages, with IGA",
        {
            "area_percent": {"head_neck": 20, "upper_limbs": 35, "trunk": 40, "lower_limbs": 10},
            "iga": 3,
        },
    ),
    "measured": _example("Measured BSA (palm method)", {"bsa_percent": 12.5, "iga": 3}),
}
DLQI_SCORE = {
    "answered": _example(
        "Ten items answered (item 7 in its two parts)",
        {
            "dlqi": {
                "item1": 2,
                "item2": 1,
                "item3": 0,
                "item4": 3,
                "item5": 1,
                "item6": 0,
                "item7_prevented": False,
                "item7_problem": 2,
                "item8": 1,
                "item9": 0,
                "item10": 1,
            }
        },
    ),
}
PATIENT = {
    "trial_subject": _example(
        "A trial subject",
        {
            "identifiers": [{"system": "https://trial.example/subject", "value": "S-001"}],
            "sex": "female",
            "birth_year": 1975,
        },
    ),
}
ASSESSMENT = {
    "baseline": _example(
        "Baseline (PASI 28.7)",
        {"assessed_on": "2011-10-20", "visit": "Baseline", "pasi": PASI_EXAMPLE, "iga": 4},
    ),
    "week_12": _example(
        "Week 12 (PASI 5.7: a PASI 75 response)",
        {"assessed_on": "2012-01-12", "visit": "Week 12", "pasi": PASI_WEEK_12, "iga": 2},
        "Record it after the baseline, then read the outcomes.",
    ),
}
ASSESSMENT_AMEND = {
    "iga_corrected": _example(
        "Correct the IGA, keeping the rest",
        {
            "assessed_on": "2011-10-20",
            "visit": "Baseline",
            "pasi": PASI_EXAMPLE,
            "iga": 3,
            "reason": "IGA transcribed wrongly from the paper form",
        },
        "Send the full clinical content with `reason`, and If-Match with the ETag you read.",
    ),
}
TREATMENT = {
    "infusion": _example(
        "A cell therapy infusion",
        {
            "agent": "UC-MSC infusion",
            "started_on": "2011-10-20",
            "doses": [{"given_on": "2011-10-20", "amount": 1e6, "unit": "cells/kg"}],
            "notes": "single infusion",
        },
    ),
}
TREATMENT_AMEND = {
    "course_ended": _example(
        "Record that the course ended",
        {
            "agent": "UC-MSC infusion",
            "started_on": "2011-10-20",
            "ended_on": "2011-11-20",
            "doses": [{"given_on": "2011-10-20", "amount": 1e6, "unit": "cells/kg"}],
            "notes": "single infusion",
            "reason": "course end date reported by the trial site",
        },
        "Send the full course with `reason`, and If-Match with the ETag you read.",
    ),
}
ORGANIZATION = {"clinic": _example("A clinic", {"name": "Clinic A dermatology"})}
API_KEY = {
    "clinic_integration": _example(
        "A clinic's EHR integration",
        {"name": "clinic-a-ehr", "scopes": ["read", "write"]},
        "With several organizations, add `organizations`: the ids the key may reach.",
    ),
}
BATCH = {
    "trial_visit": _example(
        "A trial subject's week 12 visit, creating the subject if new",
        {
            "mode": "per_item",
            "items": [
                {
                    "key": "S-101/Week 12",
                    "patient": {
                        "identifier": {"system": "https://trial.example/subject", "value": "S-101"},
                        "create": {"sex": "female", "birth_year": 1975},
                    },
                    "assessment": {
                        "assessed_on": "2012-01-12",
                        "visit": "Week 12",
                        "pasi": PASI_WEEK_12,
                        "iga": 2,
                    },
                }
            ],
        },
        "Up to 1,000 items; `key` makes each item retry-safe (a replay answers "
        "`replayed: true` and stores nothing new).",
    ),
}
