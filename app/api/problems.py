"""RFC 9457 problem details: the one place that turns errors into HTTP answers."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app import errors
from app.api.validation import describe_validation_errors
from app.formats import fhir

PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_ERRORS = 100
"""The most `errors` items one problem lists (`errors_omitted` counts the others)."""
PROBLEM_BASE = "https://psoriasis-scoring.dev/problems/"
log = logging.getLogger("app.errors")

STATUS_BY_ERROR: dict[type[errors.DomainError], int] = {
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.InvalidInput: 422,
    errors.InvalidParameter: 422,
    errors.IdempotencyKeyReused: 422,
    errors.PreconditionRequired: 428,
    errors.PreconditionFailed: 412,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.RateLimited: 429,
}

_HTTP_TITLES = {
    400: ("malformed-request", "Malformed request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("content-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def status_for(exc: errors.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def domain_error_response(exc: errors.DomainError) -> JSONResponse:
    status = status_for(exc)
    extra = dict(exc.extra)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.InvalidInput | errors.InvalidParameter):
        extra["errors"] = exc.errors
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="psoriasis-scoring"'
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    return problem_response(status, exc.slug, exc.title, exc.detail, headers or None, **extra)


async def _on_domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    return domain_error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        return problem_response(
            400, "malformed-request", "Malformed request", "the request body is not valid JSON"
        )
    items = describe_validation_errors(request, raw[: MAX_ERRORS + 1])
    extra: dict[str, Any] = {}
    if len(raw) > MAX_ERRORS:
        # A large invalid body can break thousands of rules: name the first ones, count the rest.
        items = items[:MAX_ERRORS]
        extra["errors_omitted"] = len(raw) - MAX_ERRORS
    detail = "; ".join(
        f"{i.get('pointer', i.get('parameter', ''))}: {i['detail']}" for i in items[:5]
    )
    if extra:
        detail += f" (and {extra['errors_omitted'] + len(items) - 5} more)"
    return problem_response(
        422, "validation-error", "Invalid input", detail or "invalid input", errors=items, **extra
    )


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this path (RFC 9110 §15.5.6: `Allow` lists them all;
    Starlette would name only the first matching route's)."""
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _HTTP_TITLES.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
    return problem_response(exc.status_code, slug, title, detail, headers or None)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Only the error's class and the route template: a database error's message can quote the
    # values it refused (identifiers, notes), which must not reach the logs.
    route = request.scope.get("route")
    log.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        getattr(route, "path", "?"),
    )
    return problem_response(
        500, "internal-error", "Internal server error", "the server could not complete the request"
    )


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]
OnRefusal = Callable[[Request, int], Awaitable[bool]]


def _audited(handler: Handler, on_refusal: OnRefusal) -> Handler:
    """Every refused request passes `on_refusal` (the audit) before its answer leaves; when the
    audit cannot be written the request fails with 500 instead."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        response = await handler(request, exc)
        if not await on_refusal(request, response.status_code):
            response = problem_response(
                500,
                "internal-error",
                "Internal server error",
                "the server could not complete the request",
            )
        if is_fhir_path(request.url.path):
            return as_operation_outcome(request.url.path, response)
        return response

    return handle


# Under /fhir every error is an OperationOutcome (same status, same headers) instead.
FHIR_PREFIX = "/fhir"
FHIR_MEDIA_TYPE = "application/fhir+json"


def is_fhir_path(path: str) -> bool:
    return path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")


def _fhirpath(path: str, pointer: str) -> str:
    """FHIRPath of a JSON pointer into the posted resource (`/component/3/code` ->
    `Observation.component[3].code`)."""
    expression = path.removeprefix(FHIR_PREFIX + "/").split("/")[0] or "Resource"
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        expression += f"[{part}]" if part.isdigit() else f".{part}"
    return expression


def as_operation_outcome(path: str, problem: JSONResponse) -> JSONResponse:
    """The FHIR answer of a problem: one issue per listed error, with its element's FHIRPath
    (an `expression` the FHIR facade set, else the JSON pointer's); a query parameter is named
    in the diagnostics, as it is no element."""
    body = json.loads(bytes(problem.body))
    issues = []
    for item in body.get("errors", []):
        expression = item.get("expression")
        if expression is None and "pointer" in item:
            expression = _fhirpath(path, item["pointer"])
        name = item.get("parameter")
        diagnostics = f"{name}: {item['detail']}" if name else str(item["detail"])
        issues.append(fhir.OutcomeIssue(diagnostics, [expression] if expression else None))
    if not issues:
        issues.append(fhir.OutcomeIssue(str(body.get("detail") or body.get("title", ""))))
    status = problem.status_code
    headers = {
        k: v for k, v in problem.headers.items() if k not in ("content-length", "content-type")
    }
    return JSONResponse(
        fhir.operation_outcome_issues(status, issues),
        status_code=status,
        media_type=FHIR_MEDIA_TYPE,
        headers=headers,
    )


def install_problem_handlers(app: FastAPI, on_refusal: OnRefusal) -> None:
    app.add_exception_handler(errors.DomainError, _audited(_on_domain_error, on_refusal))
    app.add_exception_handler(RequestValidationError, _audited(_on_validation_error, on_refusal))
    app.add_exception_handler(StarletteHTTPException, _audited(_on_http_error, on_refusal))
    app.add_exception_handler(Exception, _audited(_on_unexpected, on_refusal))
