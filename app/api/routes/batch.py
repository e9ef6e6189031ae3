"""Batch upload for trial systems (SPEC 7): `POST /v1/assessments:batch`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response
from pydantic_core import to_json

from app.api.context import WriteContext, audited, json_response
from app.api.lean_route import LeanRoute
from app.api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, status_for
from app.api.state import runtime
from app.errors import DomainError, InvalidInput, InvalidParameter
from app.schemas import examples
from app.schemas.batch import BatchIn, BatchOut
from app.schemas.common import problem_responses
from app.services import batch as service
from app.services import idempotency

router = APIRouter(route_class=LeanRoute, tags=["assessments"])

ITEMS_PER_TOKEN = 10
"""Rate limiting: a batch takes one token of its key's bucket per started 10 items (the
request itself took the first), so a 1,000-item batch counts as 100 requests."""


def describe(exc: DomainError) -> tuple[int, dict[str, object]]:
    """An item's failure as the problem a single POST would have answered."""
    status = status_for(exc)
    problem: dict[str, object] = {
        "type": PROBLEM_BASE + exc.slug,
        "title": exc.title,
        "status": status,
        "detail": exc.detail,
        **exc.extra,
    }
    if isinstance(exc, InvalidInput | InvalidParameter):
        problem["errors"] = exc.errors
    return status, problem


@router.post(
    "/v1/assessments:batch",
    summary="Record up to 1,000 assessments for any patients, per item or all or nothing",
    response_model=BatchOut,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
)
@audited("batch-assessments")
def create_batch(
    request: Request,
    body: Annotated[BatchIn, Body(openapi_examples=examples.BATCH)],
    ctx: WriteContext,
) -> Response:
    """Each item (`key`, `patient`, `assessment`) is recorded exactly as
    `POST /v1/patients/{patient_id}/assessments` would record it, with its own audit event;
    `patient` is `{"id": ...}` or `{"identifier": {...}}` with optional `create` (and
    `organization_id` when the key holds several organizations). Another organization's
    patient is an unknown one (404 for that item).

    `per_item` answers 200 with every item's result in input order (`status` 201, or the
    item's problem, its pointers under `/items/<index>/`); `all_or_nothing` stores every item
    or none: when any fails it answers 422 with the failing items' results and stores nothing.
    `key` is the item's idempotency key: a replay answers its first result with
    `replayed: true`. (The request's own `Idempotency-Key` header is not used: the items' keys
    make a batch retry-safe.)

    **Rate limit:** one request token per started 10 items (a 1,000-item batch counts as 100
    requests)."""
    extra = -(-len(body.items) // ITEMS_PER_TOKEN) - 1
    if extra > 0:
        limiter = runtime(request).rate_limiter
        limiter.check(str(ctx.access.key_id), cost=min(float(extra), limiter.per_minute - 1.0))
    settings = ctx.settings
    origin = service.Origin(
        access=ctx.access,
        method=ctx.method,
        route=ctx.route,
        action=ctx.action,
        describe=describe,
        policy=idempotency.Policy(
            settings.idempotency_lease_seconds,
            timedelta(hours=settings.idempotency_retention_hours),
        ),
    )
    answer = service.run_batch(ctx.db, origin, body)
    if answer.status == 200:
        out = BatchOut.model_validate({"mode": body.mode, "results": answer.results})
        return json_response(200, out.model_dump_json(exclude_none=True), {})
    errors: list[object] = []
    for result in answer.results:
        item = result["problem"]
        errors.extend(
            item.get("errors")
            or [{"pointer": f"/items/{result['index']}", "detail": item["detail"]}]
        )
    problem = {
        "type": PROBLEM_BASE + "batch-failed",
        "title": "Batch not stored",
        "status": 422,
        "detail": f"{len(answer.results)} of {len(body.items)} items failed; nothing was stored",
        "results": answer.results,
        "errors": errors,
    }
    return Response(to_json(problem), status_code=422, media_type=PROBLEM_MEDIA_TYPE)
