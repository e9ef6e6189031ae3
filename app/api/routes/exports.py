"""Exports for statisticians: the assessments as CSV, and the PASI as SDTM RS (CSV and CDISC
Dataset-JSON v1.1). Streamed from a read transaction; the audit event, naming every exported
patient, is committed before the first byte."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.api.context import ReadContext, RequestContext, audited
from app.api.lean_route import LeanRoute
from app.formats import csv_export, sdtm
from app.schemas.common import IsoDate, problem_responses
from app.services import exports as service

router = APIRouter(route_class=LeanRoute, tags=["exports"])

IdentifierSystem = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        description="Only patients with an identifier of this system (for SDTM: required; "
        "USUBJID is that identifier's value)",
    ),
]
SdtmSystem = Annotated[
    str,
    Query(
        min_length=1,
        max_length=255,
        description="The identifier system whose value is the USUBJID; patients without one "
        "are left out",
        json_schema_extra={"example": "https://trial.example/subject"},
    ),
]
StudyId = Annotated[
    str,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="STUDYID of every row (letters, digits, `_`, `.`, `-`)",
        json_schema_extra={"example": "TRIAL-001"},
    ),
]
FromDate = Annotated[IsoDate | None, Query(alias="from", description="Assessed on or after")]
ToDate = Annotated[IsoDate | None, Query(description="Assessed on or before")]


def _csv_responses(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}},
        **problem_responses(401, 403, 422, 429),
    }


def _stream(
    ctx: RequestContext,
    flt: service.ExportFilter,
    media_type: str,
    filename: str,
    render: Any,
) -> StreamingResponse:
    with ctx.db.read() as session:
        patients = service.exported_patients(session, ctx.access, flt)

    def rows(session: Any) -> Iterator[bytes]:
        return render(service.export_rows(session, ctx.access, flt))  # type: ignore[no-any-return]

    return ctx.stream(
        ctx.touched(patient_ids=patients),
        media_type,
        rows,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _filter(system: str | None, from_: date | None, to: date | None) -> service.ExportFilter:
    return service.ExportFilter(identifier_system=system, from_date=from_, to_date=to)


@router.get(
    "/v1/exports/assessments.csv",
    summary="Every active assessment as CSV (inputs and scores), streamed",
    response_class=StreamingResponse,
    responses=_csv_responses("text/csv", "One row per active assessment, header first"),
)
@audited("export-assessments")
def export_assessments(
    ctx: ReadContext,
    identifier_system: IdentifierSystem = None,
    from_: FromDate = None,
    to: ToDate = None,
) -> StreamingResponse:
    """Columns: patient id, organization, identifiers (`system|value;...`), assessment id and
    version, visit, date, assessor, baseline flag, every input (DLQI answers as numbers only)
    and every score. Entered-in-error assessments are left out."""
    return _stream(
        ctx,
        _filter(identifier_system, from_, to),
        "text/csv; charset=utf-8",
        "assessments.csv",
        lambda rows: csv_export.assessments_csv(row for _u, row in rows),
    )


def _rs(
    studyid: str, rows: Iterator[tuple[str | None, csv_export.ExportRow]]
) -> Iterator[sdtm.RsRow]:
    return sdtm.number_rows(studyid, ((u or "", row) for u, row in rows))


@router.get(
    "/v1/exports/sdtm-rs.csv",
    summary="The PASI as SDTM RS rows (CSV), streamed",
    response_class=StreamingResponse,
    responses=_csv_responses("text/csv", "RS rows, header first (docs/sdtm.md)"),
)
@audited("export-sdtm-rs")
def export_sdtm_csv(
    ctx: ReadContext,
    studyid: StudyId,
    identifier_system: SdtmSystem,
    from_: FromDate = None,
    to: ToDate = None,
) -> StreamingResponse:
    """STUDYID, DOMAIN (RS), USUBJID, RSSEQ, RSTESTCD, RSTEST, RSCAT, RSORRES, RSSTRESC,
    RSSTRESN, RSBLFL, VISIT, RSDTC, RSEVAL. The test codes are sponsor-defined (docs/sdtm.md)."""
    return _stream(
        ctx,
        _filter(identifier_system, from_, to),
        "text/csv; charset=utf-8",
        "rs.csv",
        lambda rows: sdtm.rs_csv(_rs(studyid, rows)),
    )


@router.get(
    "/v1/exports/sdtm-rs.json",
    summary="The PASI as SDTM RS, as CDISC Dataset-JSON v1.1, streamed",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "A Dataset-JSON v1.1 document (`columns`, `rows`, `records`)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **problem_responses(401, 403, 422, 429),
    },
)
@audited("export-sdtm-rs-json")
def export_sdtm_json(
    ctx: ReadContext,
    studyid: StudyId,
    identifier_system: SdtmSystem,
    from_: FromDate = None,
    to: ToDate = None,
) -> StreamingResponse:
    """The same rows as `sdtm-rs.csv`, in CDISC Dataset-JSON v1.1 (docs/sdtm.md)."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return _stream(
        ctx,
        _filter(identifier_system, from_, to),
        "application/json",
        "rs.json",
        lambda rows: sdtm.dataset_json(_rs(studyid, rows), studyid, created),
    )
