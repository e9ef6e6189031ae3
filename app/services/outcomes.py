"""Read a patient's stored scores, hand them to the pure outcomes core, shape its answer."""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.db.models import Assessment, Treatment
from app.errors import InvalidParameter, NotFound
from app.schemas.outcomes import (
    AssessmentPoint,
    ChangeOut,
    ClearanceOut,
    EpisodeOut,
    OutcomesOut,
    ReboundOut,
    RelapseOut,
    TargetOut,
)
from app.scoring.outcomes import (
    AssessmentRef,
    DatedScore,
    OutcomeInputError,
    OutcomeOptions,
    Outcomes,
    TreatmentCourse,
    compute_outcomes,
)
from app.services.patients import ensure_patient

_HUNDREDTHS = Decimal("0.01")


def _pasi(tenths: int) -> float:
    return tenths / 10


def _bsa(value: Decimal | None) -> float | None:
    return None if value is None else float(value.quantize(_HUNDREDTHS, ROUND_HALF_UP))


def _point(ref: AssessmentRef) -> AssessmentPoint:
    return AssessmentPoint(
        assessment_id=uuid.UUID(ref.assessment_id),
        assessed_on=ref.assessed_on,
        pasi=_pasi(ref.pasi_tenths),
        bsa_percent=_bsa(ref.bsa_percent),
    )


def _dec(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def shape(result: Outcomes) -> OutcomesOut:
    rebound = result.rebound
    return OutcomesOut(
        anchor=result.anchor,
        anchor_on=result.anchor_on,
        treatment_id=None if result.treatment_id is None else uuid.UUID(result.treatment_id),
        baseline=_point(result.baseline),
        latest=_point(result.latest),
        change=ChangeOut(
            pasi_absolute=_pasi(result.change.pasi_absolute_tenths),
            percent_improvement=_dec(result.change.percent_improvement),
            bsa_absolute=_bsa(result.change.bsa_absolute),
            note=result.change.note,
        ),
        responses={
            name: TargetOut(
                reached_now=t.reached_now,
                first_reached_on=t.first_reached_on,
                days=t.days,
                note=t.note,
            )
            for name, t in result.responses.items()
        },
        clearance=ClearanceOut(
            criterion=result.clearance.criterion,
            cleared_on=result.clearance.cleared_on,
            days_to_clearance=result.clearance.days_to_clearance,
            censored=result.clearance.censored,
            days_observed=result.clearance.days_observed,
            lasted_days=result.clearance.lasted_days,
            ongoing=result.clearance.ongoing,
            note=result.clearance.note,
        ),
        relapse=RelapseOut(
            definition=result.relapse.definition,
            threshold=None
            if result.relapse.threshold_tenths is None
            else _pasi(result.relapse.threshold_tenths),
            evaluable_from=result.relapse.evaluable_from,
            relapsed_on=result.relapse.relapsed_on,
            days_to_relapse=result.relapse.days_to_relapse,
            relapse_free_days=result.relapse.relapse_free_days,
            censored=result.relapse.censored,
            note=result.relapse.note,
        ),
        episodes=[
            EpisodeOut(
                responded_on=e.responded_on,
                best_pasi=_pasi(e.best_pasi_tenths),
                best_on=e.best_on,
                cleared_on=e.cleared_on,
                relapsed_on=e.relapsed_on,
            )
            for e in result.episodes
        ],
        rebound=None
        if rebound is None
        else ReboundOut(
            treatment_id=None if rebound.treatment_id is None else uuid.UUID(rebound.treatment_id),
            treatment_ended_on=rebound.treatment_ended_on,
            window_days=rebound.window_days,
            rebounded=rebound.rebounded,
            rebound_on=rebound.rebound_on,
            days_after_end=rebound.days_after_end,
            note=rebound.note,
        ),
        series=[],
        notes=result.notes,
    )


def series_json(result: Outcomes) -> list[dict[str, Any]]:
    """The series as JSON-ready dicts (`SeriesPointOut` documents the shape): a patient can have
    thousands of points, and a model per point cost more than computing the outcomes."""
    return [
        {
            "assessment_id": p.assessment_id,
            "assessed_on": p.assessed_on.isoformat(),
            "days": p.days,
            "weeks": round(p.days / 7, 1),
            "pasi": p.pasi_tenths / 10,
            "bsa_percent": _bsa(p.bsa_percent),
            "iga": p.iga,
            "percent_improvement": _dec(p.percent_improvement),
            "counts": p.counts,
        }
        for p in result.series
    ]


def outcomes_json(result: Outcomes) -> dict[str, Any]:
    body = shape(result).model_dump(mode="json")
    body["series"] = series_json(result)
    return body


_ACTIVE_SCORES = select(
    Assessment.id,
    Assessment.assessed_on,
    Assessment.recorded_at,
    Assessment.pasi_tenths,
    Assessment.bsa_percent,
    Assessment.iga,
    Assessment.is_baseline,
).where(Assessment.patient_id == bindparam("patient_id"), Assessment.entered_in_error.is_(False))
_ACTIVE_TREATMENTS = select(Treatment.id, Treatment.started_on, Treatment.ended_on).where(
    Treatment.patient_id == bindparam("patient_id"), Treatment.entered_in_error.is_(False)
)


def load_scores(session: Session, patient_id: uuid.UUID) -> list[DatedScore]:
    rows = session.connection().execute(_ACTIVE_SCORES, {"patient_id": patient_id})
    return [
        DatedScore(
            str(assessment_id),
            assessed_on,
            recorded_at,
            pasi_tenths,
            None if bsa is None else Decimal(bsa).normalize(),
            iga,
            is_baseline,
        )
        for assessment_id, assessed_on, recorded_at, pasi_tenths, bsa, iga, is_baseline in rows
    ]


def load_treatments(session: Session, patient_id: uuid.UUID) -> list[TreatmentCourse]:
    rows = session.connection().execute(_ACTIVE_TREATMENTS, {"patient_id": patient_id})
    return [TreatmentCourse(str(r.id), r.started_on, r.ended_on) for r in rows]


def patient_outcomes(
    session: Session,
    patient_id: uuid.UUID,
    options: OutcomeOptions,
    treatment_id: uuid.UUID | None,
) -> dict[str, Any]:
    ensure_patient(session, patient_id)
    treatments = load_treatments(session, patient_id)
    if treatment_id is not None:
        anchor = next((t for t in treatments if t.treatment_id == str(treatment_id)), None)
        if anchor is None:
            raise NotFound(f"patient {patient_id} has no active treatment {treatment_id}")
        options = OutcomeOptions(
            clearance=options.clearance,
            relapse=options.relapse,
            relapse_threshold_tenths=options.relapse_threshold_tenths,
            treatment=anchor,
            rebound_window_days=options.rebound_window_days,
        )
    try:
        result = compute_outcomes(load_scores(session, patient_id), options, treatments)
    except OutcomeInputError as exc:
        raise InvalidParameter(exc.field, exc.rule) from exc
    if result is None:
        raise NotFound(
            f"patient {patient_id} has no assessments (entered-in-error ones do not count): "
            "there are no outcomes yet",
            reason="no-assessments",
        )
    return outcomes_json(result)
