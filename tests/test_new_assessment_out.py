"""`assessments.new_assessment_out` answers a new assessment without validating again the parts
its request's body and the scoring core made: the answer must be, byte for byte, the one
`to_out` gives from the stored columns (what a GET of the record returns)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.auth.access import Access
from app.schemas.records import AssessmentIn
from app.schemas.scores import PasiIn
from app.services import assessments

ACCESS = Access(uuid.uuid4(), "someone", frozenset(), None)
SIGN = st.integers(0, 4)
PERCENT = st.one_of(
    st.integers(0, 100),
    st.decimals(0, 100, places=4, allow_nan=False, allow_infinity=False).map(float),
)
TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20)


@st.composite
def regions(draw: st.DrawFn) -> dict[str, Any]:
    region: dict[str, Any] = {"erythema": draw(SIGN), "induration": draw(SIGN)}
    region["desquamation"] = draw(SIGN)
    if draw(st.booleans()):
        region["area_percent"] = draw(PERCENT)
    else:
        region["area_score"] = draw(st.integers(0, 6))
    return region


ITEM7: list[dict[str, Any]] = [
    {},
    {"item7_prevented": True},
    *({"item7_prevented": False, "item7_problem": p} for p in (0, 1, 2)),
]
DLQI = st.tuples(
    st.fixed_dictionaries(
        {}, optional={f"item{i}": st.one_of(st.none(), st.integers(0, 3)) for i in (1, 2, 3, 10)}
    ),
    st.sampled_from(ITEM7),
).map(lambda parts: {**parts[0], **parts[1]})
BODIES = st.fixed_dictionaries(
    {
        "assessed_on": st.dates(date(1900, 1, 1), date(2020, 12, 31)).map(date.isoformat),
        "pasi": st.fixed_dictionaries({r: regions() for r in PasiIn.model_fields}),
    },
    optional={
        "visit": TEXT.filter(bool),
        "assessor": TEXT.filter(bool),
        "notes": TEXT,
        "iga": st.integers(0, 4),
        "bsa_percent": PERCENT,
        "dlqi": DLQI,
    },
)


@settings(max_examples=300, deadline=None)
@given(body=BODIES)
def test_a_new_assessments_answer_is_the_stored_records(body: dict[str, Any]) -> None:
    scored = assessments.score_assessment(AssessmentIn.model_validate(body))
    rows = assessments.new_assessment_rows(ACCESS, uuid.uuid4(), scored)
    built = assessments.new_assessment_out(rows, scored)
    stored = assessments.to_out(rows[0])
    assert built.model_dump_json() == stored.model_dump_json()
    assert built == stored
