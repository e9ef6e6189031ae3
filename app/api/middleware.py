"""The two ASGI middlewares (pure ASGI: cheaper than BaseHTTPMiddleware).

`BodyGuard` reads request bodies before the app does: it answers 413 as soon as a body exceeds
the limit (without reading it whole), 415 for a body that is not JSON, and 400 for JSON that
RFC 8259 does not allow (NaN, Infinity, bad UTF-8), which Python's json module would otherwise
accept. The value it parsed is left in the scope for `LeanRoute`, so a body is parsed
once. `SecurityHeaders` adds the security headers to every response.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.lean_route import PARSED_BODY_KEY
from app.api.problems import as_operation_outcome, is_fhir_path, problem_response

_BODY_METHODS = {b"POST", b"PUT", b"PATCH", b"DELETE"}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _reject_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"the member name {duplicate!r} appears twice in one object")
    return members


def strict_json(body: bytes) -> tuple[Any, str | None]:
    """The body's JSON value, or why it is not JSON we accept. Duplicate member names are
    refused: the later value would silently replace the earlier one."""
    try:
        value = json.loads(
            body.decode("utf-8"),
            parse_constant=_reject_constant,
            object_pairs_hook=_reject_duplicate_names,
        )
    except UnicodeDecodeError:
        return None, "the request body is not UTF-8"
    except RecursionError:
        return None, "the request body is nested too deeply"
    except ValueError as exc:
        message = str(exc)
        if "appears twice" in message or "is not valid JSON" in message:
            return None, message
        return None, "the request body is not valid JSON (RFC 8259)"
    return value, None


def _is_plain_json(content_type: bytes) -> bool:
    """`application/json` or `application/<x>+json`: the types FastAPI itself reads as JSON."""
    if content_type == b"application/json":
        return True
    kind, _, subtype = content_type.partition(b"/")
    return kind == b"application" and subtype.endswith(b"+json") and b" " not in subtype


def _nul_in_query(query_string: bytes) -> JSONResponse:
    """A parameter value with U+0000: well-formed, but no field accepts it (PostgreSQL text cannot
    hold it), so it is refused as an invalid value, naming the parameter."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    name = next((k for k, v in pairs if "\x00" in k or "\x00" in v), "")
    detail = "must not contain the NUL character (U+0000)"
    return problem_response(
        422,
        "validation-error",
        "Invalid input",
        f"{name}: {detail}",
        errors=[{"parameter": name.replace("\x00", ""), "in": "query", "detail": detail}],
    )


def _for_path(scope: Scope, response: JSONResponse) -> JSONResponse:
    """Under /fhir a refusal is an OperationOutcome, as every other error there."""
    path = str(scope.get("path", ""))
    return as_operation_outcome(path, response) if is_fhir_path(path) else response


class BodyGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"%00" in scope.get("query_string", b""):
            await _for_path(scope, _nul_in_query(scope["query_string"]))(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"].encode() not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body.strip():
            # Media types are case-insensitive (RFC 9110 §8.3.1); a body without one is 415 too.
            declared_type = headers.get(b"content-type")
            content_type = (declared_type or b"").split(b";")[0].strip().lower()
            if content_type != b"application/json" and not content_type.endswith(b"+json"):
                unsupported = problem_response(
                    415,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "send the body as application/json",
                )
                await _for_path(scope, unsupported)(scope, receive, send)
                return
            value, problem = strict_json(body)
            if problem is not None:
                malformed = problem_response(400, "malformed-request", "Malformed request", problem)
                await _for_path(scope, malformed)(scope, receive, send)
                return
            if _is_plain_json(content_type):
                # Parsed once: LeanRoute validates this value instead of parsing the body again.
                scope[PARSED_BODY_KEY] = value
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _for_path(
            scope,
            problem_response(
                413,
                "content-too-large",
                "Request body too large",
                f"the request body exceeds {self.max_body_bytes} bytes",
                headers={"Connection": "close"},
            ),
        )
        await response(scope, receive, send)


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The Swagger UI page loads its script and styles, so it gets no restrictive CSP.
        is_api = scope["path"].startswith("/v1/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_SECURITY_HEADERS)
                if is_api:
                    headers.append(_API_CSP)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
