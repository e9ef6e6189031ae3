"""What a patient's course chart shows (SPEC section 8), read in the caller's scope: the
outcomes core's result (None when the patient has no active assessment: the chart then says
so) and every active treatment course with its doses. Rendering is `app.formats.charts`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy.orm import Session

from app.auth.access import Access
from app.errors import InvalidParameter
from app.formats.charts import ChartCourse, ChartDose, CourseChart
from app.scoring.errors import ScoringInputError
from app.scoring.outcomes import OutcomeOptions, compute_outcomes
from app.services.outcomes import load_courses_of_many, load_scores
from app.services.patients import get_patient


def patient_chart(
    session: Session,
    access: Access,
    patient_id: uuid.UUID,
    options: OutcomeOptions,
    lane: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> CourseChart:
    """404 (as if unknown) for a patient the caller may not reach. The title is the patient's
    first identifier (`system|value`), or its id when it has none. The course is read and
    computed inside `lane` (`Database.bulk_read`), as uncached outcomes are."""
    patient = get_patient(session, access, patient_id)
    first = patient.identifiers[0] if patient.identifiers else None
    title = f"{first.system}|{first.value}" if first is not None else str(patient.id)
    with lane():
        records = load_courses_of_many(session, access, [patient_id]).get(patient_id, [])
        try:
            outcomes = compute_outcomes(
                load_scores(session, patient_id), options, [r.course for r in records]
            )
        except ScoringInputError as exc:
            raise InvalidParameter(exc.field, exc.rule) from exc
    courses = tuple(
        ChartCourse(
            agent=record.agent,
            started_on=record.course.started_on,
            ended_on=record.course.ended_on,
            doses=tuple(ChartDose(on, amount, unit) for on, amount, unit in record.doses),
        )
        for record in records
    )
    return CourseChart(title=title, outcomes=outcomes, courses=courses)
