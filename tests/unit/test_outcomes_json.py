"""The outcomes JSON is one pure function of the core's result, and it is exactly the shape the
OpenAPI document promises (`OutcomesOut`), for every option and every course."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from app.formats.outcomes import outcomes_json
from app.schemas.outcomes import OutcomesOut
from app.scoring.outcomes import (
    DatedScore,
    OutcomeOptions,
    TreatmentCourse,
    compute_outcomes,
)
from tests.unit.test_outcomes_properties import option_sets, timelines


def _with_uuids(scores: list[DatedScore]) -> list[DatedScore]:
    return [replace(s, assessment_id=str(uuid.uuid4())) for s in scores]


@settings(max_examples=200, deadline=None)
@given(timelines(), option_sets(), st.booleans())
def test_outcomes_json_validates_against_the_documented_model_and_dumps_back_unchanged(
    scores: list[DatedScore], options: OutcomeOptions, with_course: bool
) -> None:
    scores = _with_uuids(scores)
    courses = (
        [TreatmentCourse(str(uuid.uuid4()), scores[0].assessed_on, date(2030, 1, 1))]
        if with_course
        else []
    )
    result = compute_outcomes(scores, options, courses)
    assert result is not None
    body = outcomes_json(result)
    assert OutcomesOut.model_validate(body).model_dump(mode="json") == body


def test_outcomes_json_numbers_are_rounded_for_display_only() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    result = compute_outcomes(
        [
            DatedScore(str(uuid.uuid4()), date(2020, 1, 1), at, 28, Decimal("12.345")),
            DatedScore(str(uuid.uuid4()), date(2020, 3, 1), at, 7, Decimal("3.335")),
        ]
    )
    assert result is not None
    body = outcomes_json(result)
    # 2.8 -> 0.7 is exactly 75 %: shown as 75.0, and PASI 75 is reached (compared exactly).
    assert body["change"]["percent_improvement"] == 75.0
    assert body["responses"]["pasi75"]["reached_now"] is True
    assert body["baseline"]["bsa_percent"] == 12.35  # half up, two decimals
    assert body["latest"]["bsa_percent"] == 3.34
    assert body["series"][1]["days"] == 60  # 2020 is a leap year
    assert body["series"][1]["weeks"] == 8.6  # 60 / 7 = 8.57
