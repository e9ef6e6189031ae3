"""Answers computed after the audited read: cohort statistics and charts.

`read_then` runs the database read through `RequestContext.read_value`, so the audit event names
every patient the read included and is committed before anything is answered, and hands back
what was read. The answer is then computed from it outside any transaction: the cohort core
over thousands of patients, or a chart render (0.2–0.8 s under matplotlib's lock), holds no
database connection or snapshot meanwhile. Like `RequestContext.stream`, the 200 event is
durable before the body is built; a failure while building it is audited too (as its 500).

Image responses are their own classes so that OpenAPI documents their media types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.api.context import RequestContext, json_response
from app.services.audit import AuditInfo

T = TypeVar("T")

SVG_MEDIA_TYPE = "image/svg+xml"
PNG_MEDIA_TYPE = "image/png"


class SvgResponse(Response):
    media_type = SVG_MEDIA_TYPE


class PngResponse(Response):
    media_type = PNG_MEDIA_TYPE


def read_then(
    ctx: RequestContext, load: Callable[[Session], T], audit: Callable[[T], AuditInfo]
) -> T:
    """What `load` read, once it and its audit event (`audit(read)`) are committed."""
    return ctx.read_value(load, audit)


def json_answer(body: str) -> Response:
    return json_response(200, body, {})
