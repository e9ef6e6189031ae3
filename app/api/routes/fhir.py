"""FHIR R4 facade (`/fhir`): Patient, the PASI Observation, the service's CodeSystem.

Answers are `application/fhir+json`; errors are OperationOutcome resources with the v1 status
codes (`app.api.problems`). `metadata` is public, as FHIR clients discover a server before they
authenticate; every other interaction needs the same bearer keys as the v1 API.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response

from app.api.context import Answer, ReadContext, WriteContext, audited, json_response, serialize
from app.api.lean_route import LeanRoute
from app.api.state import runtime
from app.formats import fhir as mapping
from app.services import fhir as service

router = APIRouter(route_class=LeanRoute, prefix="/fhir", tags=["fhir"])
FHIR_MEDIA_TYPE = "application/fhir+json"

_STATUS_TEXT = {
    400: "Malformed request (not JSON, NaN/Infinity, bad UTF-8)",
    401: "Missing or invalid API key",
    403: "The API key lacks the required scope",
    404: "Not found (another organization's ids too)",
    409: "Conflict",
    413: "Request body larger than 1 MiB",
    415: "Body is not JSON",
    422: "Invalid input: each issue's `expression` names the failing element",
    429: "Rate limit exceeded (see Retry-After)",
}


def _resource_content(resource_type: str) -> dict[str, Any]:
    schema = {"type": "object", "description": f"A FHIR R4 {resource_type} resource"}
    return {FHIR_MEDIA_TYPE: {"schema": schema}, "application/json": {"schema": schema}}


def _responses(resource_type: str, *statuses: int, success: int = 200) -> dict[int | str, Any]:
    out: dict[int | str, Any] = {
        success: {"description": f"A {resource_type}", "content": _resource_content(resource_type)}
    }
    outcome = {"type": "object", "description": "A FHIR R4 OperationOutcome resource"}
    for status in statuses:
        out[status] = {
            "description": _STATUS_TEXT[status],
            "content": {FHIR_MEDIA_TYPE: {"schema": outcome}},
        }
    return out


def _fhir(response: Response) -> Response:
    response.headers["content-type"] = FHIR_MEDIA_TYPE
    return response


def _origin(request: Request) -> str:
    """Where clients reach the service: PUBLIC_BASE_URL, else the request's own Host."""
    configured = runtime(request).settings.public_base_url
    return (configured or str(request.base_url)).rstrip("/")


def _base(request: Request) -> str:
    return _origin(request) + "/fhir"


def _self(request: Request) -> str:
    root = request.scope.get("root_path", "")
    path = request.url.path.removeprefix(root)
    query = request.url.query
    return _origin(request) + path + (f"?{query}" if query else "")


_READ = (401, 403, 404, 422, 429)


@router.get(
    "/metadata",
    summary="FHIR CapabilityStatement (public)",
    response_class=Response,
    responses=_responses("CapabilityStatement"),
)
def metadata(request: Request) -> Response:
    """What the facade offers. Public, as FHIR clients read it before authenticating."""
    body = service.capability_statement(_base(request))
    return _fhir(json_response(200, serialize(body), {}))


@router.get(
    "/CodeSystem/{code_system_id}",
    summary="The service's own code system for PASI, its regions, signs and areas",
    response_class=Response,
    responses=_responses("CodeSystem", 401, 403, 404, 429),
)
def read_code_system(code_system_id: str, ctx: ReadContext) -> Response:
    """No patient data: not audited."""
    return _fhir(json_response(200, serialize(service.code_system(code_system_id)), {}))


@router.get(
    "/Patient/{patient_id}",
    summary="FHIR read of a Patient",
    response_class=Response,
    responses=_responses("Patient", *_READ),
)
@audited("fhir-read-patient")
def read_patient(patient_id: str, ctx: ReadContext) -> Response:
    def answer(found: tuple[dict[str, Any], Any]) -> Answer:
        resource, pid = found
        return Answer(resource, ctx.touched(pid, "patient", pid))

    return _fhir(ctx.read(lambda s: answer(service.read_patient(s, ctx.access, patient_id))))


@router.get(
    "/Patient",
    summary="FHIR search of Patients by identifier (searchset Bundle)",
    response_class=Response,
    responses=_responses("Bundle", 401, 403, 422, 429),
)
@audited("fhir-search-patients")
def search_patients(
    request: Request,
    ctx: ReadContext,
    identifier: Annotated[
        str,
        Query(
            max_length=511,
            description="`system|value`; no match is an empty searchset",
            examples=["https://trial.example/subject|S-001"],
            json_schema_extra={"example": "https://trial.example/subject|S-001"},
        ),
    ],
) -> Response:
    def answer(found: tuple[dict[str, Any], Any]) -> Answer:
        bundle, ids = found
        return Answer(bundle, ctx.touched(patient_ids=ids))

    return _fhir(
        ctx.read(
            lambda s: answer(
                service.search_patients(s, ctx.access, identifier, _self(request), _base(request))
            )
        )
    )


def _observation_answer(ctx: Any, found: tuple[dict[str, Any], Any, Any]) -> Answer:
    resource, patient_id, assessment_id = found
    return Answer(resource, ctx.touched(patient_id, "assessment", assessment_id))


@router.get(
    "/Observation/{assessment_id}",
    summary="FHIR read of the PASI Observation of an assessment",
    response_class=Response,
    responses=_responses("Observation", *_READ),
)
@audited("fhir-read-observation")
def read_observation(assessment_id: str, ctx: ReadContext) -> Response:
    return _fhir(
        ctx.read(
            lambda s: _observation_answer(
                ctx, service.read_observation(s, ctx.access, assessment_id)
            )
        )
    )


@router.get(
    "/Observation/{assessment_id}/_history",
    summary="FHIR history of an Observation: every version, newest first",
    response_class=Response,
    responses=_responses("Bundle", *_READ),
)
@audited("fhir-observation-history")
def observation_history(assessment_id: str, request: Request, ctx: ReadContext) -> Response:
    return _fhir(
        ctx.read(
            lambda s: _observation_answer(
                ctx,
                service.observation_history(
                    s, ctx.access, assessment_id, _self(request), _base(request)
                ),
            )
        )
    )


@router.get(
    "/Observation/{assessment_id}/_history/{version_id}",
    summary="FHIR vread: one version of an Observation",
    response_class=Response,
    responses=_responses("Observation", *_READ),
)
@audited("fhir-vread-observation")
def observation_version(assessment_id: str, version_id: str, ctx: ReadContext) -> Response:
    return _fhir(
        ctx.read(
            lambda s: _observation_answer(
                ctx, service.observation_version(s, ctx.access, assessment_id, version_id)
            )
        )
    )


@router.get(
    "/Observation",
    summary="FHIR search of PASI Observations (searchset Bundle with total and next)",
    response_class=Response,
    responses=_responses("Bundle", 401, 403, 422, 429),
)
@audited("fhir-search-observations")
def search_observations(
    request: Request,
    ctx: ReadContext,
    patient: Annotated[str | None, Query(max_length=200, description="Patient id")] = None,
    subject: Annotated[str | None, Query(max_length=200, description="`Patient/{id}`")] = None,
    code: Annotated[
        str | None,
        Query(max_length=500, description=f"`{mapping.CODE_SYSTEM_URL}|{mapping.PASI_CODE}`"),
    ] = None,
    date: Annotated[
        list[str] | None,
        Query(description="Effective date with a ge, le, gt, lt or eq prefix; repeatable"),
    ] = None,
    count: Annotated[
        int | None,
        Query(
            alias="_count", ge=0, le=200, description="Page size (default 50; 0: the total only)"
        ),
    ] = None,
    offset: Annotated[
        int, Query(alias="_offset", ge=0, le=1_000_000, description="From the `next` link")
    ] = 0,
) -> Response:
    """Active assessments of the key's patients in date order; entered-in-error ones are left
    out (read them by id)."""
    search = service.ObservationSearch(
        patient=patient,
        subject=subject,
        code=code,
        dates=tuple(date or ()),
        count=count,
        offset=offset,
    )

    def page_url(following: int) -> str:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"]
        query.append(("_offset", str(following)))
        return f"{_base(request)}/Observation?{urlencode(query)}"

    def answer(found: tuple[dict[str, Any], Any]) -> Answer:
        bundle, ids = found
        return Answer(bundle, ctx.touched(patient_ids=ids))

    return _fhir(
        ctx.read(
            lambda s: answer(
                service.search_observations(
                    s, ctx.access, search, _self(request), page_url, _base(request)
                )
            )
        )
    )


_CREATE_EXAMPLES = {
    "baseline": {
        "summary": "Baseline (PASI 28.7) as a PASI Observation",
        "description": "Replace the subject's id with one of your patients' ids "
        "(`POST /v1/patients` answers it).",
        "value": service.example_observation(),
    }
}


@router.post(
    "/Observation",
    summary="FHIR create: record an assessment from a PASI Observation",
    status_code=201,
    response_class=Response,
    responses=_responses("Observation", 400, 401, 403, 404, 409, 413, 415, 422, 429, success=201),
)
@audited("fhir-create-observation")
async def create_observation(
    body: Annotated[
        dict[str, Any],
        Body(
            media_type=FHIR_MEDIA_TYPE,
            openapi_examples=_CREATE_EXAMPLES,
        ),
    ],
    ctx: WriteContext,
) -> Response:
    """The Observation's shape is the one `GET /fhir/Observation/{id}` serves (every input as a
    component); scores are recomputed. Same rules, scopes and `Idempotency-Key` as
    `POST /v1/patients/{patient_id}/assessments`."""
    request = service.read_posted_observation(body)

    def answer(found: tuple[dict[str, Any], Any, Any]) -> Answer:
        resource, patient_id, assessment_id = found
        return Answer(
            resource,
            ctx.touched(patient_id, "assessment", assessment_id),
            status=201,
            headers={
                "Location": f"/fhir/Observation/{assessment_id}/_history/1",
                "ETag": 'W/"1"',
            },
        )

    return _fhir(
        await ctx.write_async(
            request, lambda s: answer(service.create_observation(s, ctx.access, request))
        )
    )
