"""Per-request context: the database, the caller's access, idempotency and audit.

Routes hand a unit of work (a function of a Session, usually one service call) to
`RequestContext.read`, `.write` or `.stream`; the context runs it in one transaction together
with the audit event (and, for idempotent writes, the stored response, through
`services.idempotency.run_once`) and commits before the response is built, so no answer ever
leaves before what it reports, and its audit event, are durable.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic_core import to_json
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.auth import require
from app.api.state import runtime
from app.auth.access import Access
from app.auth.keys import Scope
from app.db.database import Database
from app.db.group_commit import Together
from app.errors import InvalidInput
from app.schemas.records import AssessmentOut, TreatmentOut
from app.services import audit, idempotency
from app.services.audit import AuditInfo
from app.services.versioning import etag
from app.settings import Settings

JSON_MEDIA_TYPE = "application/json"
log = logging.getLogger("app.audit")
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item")


def audited(action: str) -> Callable[[Endpoint], Endpoint]:
    """Name the audit action of a route. Every request to it leaves an event under this name,
    whatever its outcome: the context records successes, `audit_refusal` the rest."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.audit_action = action  # type: ignore[attr-defined]
        return endpoint

    return mark


def audit_action_of(route: object) -> str | None:
    endpoint = getattr(route, "endpoint", None)
    action = getattr(endpoint, "audit_action", None)
    return action if isinstance(action, str) else None


@dataclass(slots=True)
class Answer:
    """What a unit of work produces: the body, its status and headers, and what to audit."""

    body: BaseModel | dict[str, Any]  # a dict must already be JSON-ready
    audit: AuditInfo | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def record_answer(
    ctx: RequestContext, out: AssessmentOut | TreatmentOut, resource_type: str, status: int = 200
) -> Answer:
    """A versioned record (assessment, treatment) as an answer: its ETag and Location are built
    here and only here."""
    return Answer(
        out,
        ctx.touched(out.patient_id, resource_type, out.id),
        status=status,
        headers={"ETag": etag(out.version), "Location": f"/v1/{resource_type}s/{out.id}"},
    )


def serialize(body: BaseModel | dict[str, Any]) -> str:
    if isinstance(body, BaseModel):
        return body.model_dump_json()
    return to_json(body).decode()


def json_response(status: int, body: str | bytes, headers: dict[str, str]) -> Response:
    return Response(content=body, status_code=status, media_type=JSON_MEDIA_TYPE, headers=headers)


@dataclass(slots=True)
class RequestContext:
    db: Database
    settings: Settings
    access: Access
    method: str
    route: str
    path: str
    idempotency_key: str | None
    action: str

    def page_size(self, limit: int | None) -> int:
        return min(limit or self.settings.default_page_size, self.settings.max_page_size)

    def touched(
        self,
        patient_id: uuid.UUID | None = None,
        resource_type: str | None = None,
        resource_id: uuid.UUID | None = None,
        patient_ids: tuple[uuid.UUID, ...] = (),
    ) -> AuditInfo:
        """This request's audit event: its action and what it touched."""
        return AuditInfo(self.action, patient_id, resource_type, resource_id, patient_ids)

    def _audit(self, session: Session, info: AuditInfo | None, status: int) -> None:
        if info is not None:
            audit.record(session, self.access, self.method, self.route, info, status)

    def _answer_in(self, session: Session, work: Callable[[Session], Answer]) -> Answer:
        answer = work(session)
        self._audit(session, answer.audit, answer.status)
        return answer

    def read_value(
        self,
        load: Callable[[Session], T],
        audit_of: Callable[[T], AuditInfo | None],
        status: Callable[[T], int] = lambda _value: 200,
    ) -> T:
        """Run `load` in a read transaction (on SQLite: without the write lock, so a long read
        never stalls writers or other readers' audits), then commit its audit event in a short
        write of its own, and return what was read. Answers built from it (JSON, charts,
        cohort statistics) leave only after the event is durable."""
        with self.db.read() as session:
            value = load(session)
            noted = audit.noted_organizations(session)
        with self.db.transaction() as session:
            audit.carry_organizations(session, noted)
            self._audit(session, audit_of(value), status(value))
        return value

    async def read_probed(
        self,
        probe: Callable[[Session], T | None] | None,
        load: Callable[[Session], T],
        audit_of: Callable[[T], AuditInfo | None],
        then: Callable[[T], R],
    ) -> R:
        """`read_value` for answers that are usually ready (a cached one), for async routes:
        `probe` runs in the write transaction of the audit event, queued for the writer's
        shared commit (`Database.run_write`), so a hit costs one transaction and no thread of
        its own. On a miss (None), or with no probe (nothing can be ready), it is
        `read_value(load, audit_of)` in a worker thread. `then` shapes what was read into the
        answer: on the event loop after a hit, in the worker thread after a load."""
        if probe is not None:

            def probed(session: Session) -> T | None:
                hit = probe(session)
                if hit is not None:
                    self._audit(session, audit_of(hit), 200)
                return hit

            hit = await self.db.run_write(probed)
            if hit is not None:
                return then(hit)
        return await run_in_threadpool(lambda: then(self.read_value(load, audit_of)))

    def read(self, work: Callable[[Session], Answer]) -> Response:
        """`read_value` answered as JSON."""
        answer = self.read_value(work, lambda a: a.audit, lambda a: a.status)
        return json_response(answer.status, serialize(answer.body), answer.headers)

    def write(self, payload: BaseModel | None, work: Callable[[Session], Answer]) -> Response:
        """Run `work` and its audit event in one write transaction, made retry-safe when the
        request carries an `Idempotency-Key`."""
        unit = self._write_unit(payload, work)
        with self.db.transaction() as session:
            return unit(session)

    async def write_async(
        self, payload: BaseModel | None, work: Callable[[Session], Answer]
    ) -> Response:
        """`write` for async routes: the transaction is queued from the event loop for the
        writer's shared commit (`Database.run_write`), with no thread of the request's own."""
        return await self.db.run_write(self._write_unit(payload, work))

    async def write_together(
        self,
        payload: BaseModel | None,
        work: Callable[[Session], Answer],
        answer: Answer,
        run_many: Callable[[Session, list[Item]], list[bool]],
        item: Callable[[audit.Event, dict[str, Any] | None], Item],
    ) -> Response:
        """`write_async` for a write whose answer is known before its transaction (a new
        record, its id and columns made up front): the writer may do it together with the
        other queued requests of its kind, `run_many` doing their items in one member and
        answering `answer` for each item it wrote (`group_commit.Together`). `item` makes the
        request's item from its audit event and, with an `Idempotency-Key`, the key's row
        already answered (`idempotency.answered`: `run_many` writes it only while the key is
        unused, and leaves the item to run alone otherwise). An item it did not write runs
        `work` as `write_async` does: a replay, a reused key, a key in flight, a refusal."""
        terms = None if self.idempotency_key is None else self._key_terms(payload)
        unit = self._write_unit(payload, work, terms)
        if answer.audit is None:
            return await self.db.run_write(unit)
        body = serialize(answer.body)
        key_row = None
        if terms is not None:
            scope, digest, policy = terms
            stored = idempotency.StoredResponse(
                answer.status, body, answer.headers, answer.audit.to_json()
            )
            key_row = idempotency.answered(scope, digest, policy, stored)
        event = audit.Event(self.access, self.method, self.route, answer.audit, answer.status)
        response = json_response(answer.status, body, answer.headers)
        return await self.db.run_write(unit, Together(run_many, item(event, key_row), response))

    def _key_terms(
        self, payload: BaseModel | None
    ) -> tuple[idempotency.KeyScope, str, idempotency.Policy]:
        """The request's `Idempotency-Key` (checked), its body's digest and the key policy."""
        assert self.idempotency_key is not None
        scope = idempotency.KeyScope(
            owner=self.access.name,
            method=self.method,
            path=self.path,
            key=idempotency.validate_key(self.idempotency_key),
        )
        digest = idempotency.request_hash(
            None if payload is None else payload.model_dump(mode="json")
        )
        policy = idempotency.Policy(
            self.settings.idempotency_lease_seconds,
            timedelta(hours=self.settings.idempotency_retention_hours),
        )
        return scope, digest, policy

    def _write_unit(
        self,
        payload: BaseModel | None,
        work: Callable[[Session], Answer],
        terms: tuple[idempotency.KeyScope, str, idempotency.Policy] | None = None,
    ) -> Callable[[Session], Response]:
        """The write transaction's body: `work`, its audit event and, with an
        `Idempotency-Key`, the claim and the stored answer (`idempotency.run_once`; `terms`:
        the key's, when the caller has them already)."""
        if self.idempotency_key is None:

            def plain(session: Session) -> Response:
                answer = self._answer_in(session, work)
                return json_response(answer.status, serialize(answer.body), answer.headers)

            return plain
        scope, digest, policy = terms or self._key_terms(payload)

        def stored_unit(session: Session) -> idempotency.StoredResponse:
            answer = self._answer_in(session, work)
            return idempotency.StoredResponse(
                answer.status,
                serialize(answer.body),
                answer.headers,
                None if answer.audit is None else answer.audit.to_json(),
            )

        def keyed(session: Session) -> Response:
            stored, replayed = idempotency.run_once(
                session, scope, digest, stored_unit, policy, on_replay=self._audit_replay
            )
            headers = (
                {**stored.headers, "Idempotent-Replayed": "true"} if replayed else stored.headers
            )
            return json_response(stored.status, stored.body, headers)

        return keyed

    def _audit_replay(self, session: Session, stored: idempotency.StoredResponse) -> None:
        """A replay returns patient data too, so it is audited like the request it replays."""
        if stored.audit is not None:
            first = AuditInfo.from_json(stored.audit)
            replay = AuditInfo(
                f"replay-{first.action}", first.patient_id, first.resource_type, first.resource_id
            )
            self._audit(session, replay, stored.status)

    def stream(
        self,
        info: AuditInfo,
        media_type: str,
        rows: Callable[[Session], Iterator[bytes]],
        headers: dict[str, str] | None = None,
    ) -> StreamingResponse:
        """For exports: the audit event is committed first, then the rows are streamed from a
        read transaction (never built whole in memory, never holding the write lock)."""
        with self.db.transaction() as session:
            self._audit(session, info, 200)

        def body() -> Iterator[bytes]:
            with self.db.read() as session:
                yield from rows(session)

        return StreamingResponse(body(), media_type=media_type, headers=headers)


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return route.path if isinstance(route, APIRoute) else request.url.path


_PLACEHOLDER = re.compile(r"(\{(\w+)(?::\w+)?\})")  # a path parameter, and its name


def _canonical(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


@functools.lru_cache(maxsize=512)
def _path_template(route_path: str) -> tuple[str, tuple[tuple[str, str, str], ...]]:
    """A route's path as its literal start and, for each parameter in turn, its placeholder,
    its name and the literal text after it: parsed once per route."""
    pieces = _PLACEHOLDER.split(route_path)  # literal, placeholder, name, literal, ...
    return pieces[0], tuple(zip(pieces[1::3], pieces[2::3], pieces[3::3], strict=True))


def _canonical_path(request: Request) -> str:
    """The request's path with every id in canonical form, so that one resource has one path
    (an Idempotency-Key names one request, however its ids are spelled)."""
    params = request.path_params
    start, rest = _path_template(_route_path(request))
    if not rest:
        return start
    out = [start]
    for placeholder, name, literal in rest:
        out.append(_canonical(str(params.get(name, placeholder))))
        out.append(literal)
    return "".join(out)


def _context(request: Request, access: Access, idempotency_key: str | None) -> RequestContext:
    state = runtime(request)
    return RequestContext(
        db=state.db,
        settings=state.settings,
        access=access,
        method=request.method,
        route=_route_path(request),
        path=_canonical_path(request),
        idempotency_key=idempotency_key,
        action=audit_action_of(request.scope.get("route")) or "unaudited",
    )


def _record_refusal(
    db: Database,
    access: Access,
    method: str,
    route: str,
    action: str,
    params: dict[str, Any],
    status: int,
) -> None:
    with db.transaction() as session:
        audit.record(session, access, method, route, audit.refusal(session, action, params), status)


async def audit_refusal(request: Request, status: int) -> bool:
    """Audit a request of an audited route that did not succeed (403, 404, 409, 412, 422, 500
    ...), naming what it asked for. Requests with no valid key (401) or over the rate limit (429)
    never reach the data and are not recorded (they would let anyone write to the audit).
    False when the event could not be written: the caller then fails the request."""
    action = audit_action_of(request.scope.get("route"))
    access = getattr(request.state, "access", None)
    if action is None or not isinstance(access, Access):
        return True
    try:
        await run_in_threadpool(
            _record_refusal,
            runtime(request).db,
            access,
            request.method,
            _route_path(request),
            action,
            dict(request.path_params),
            status,
        )
    except Exception as exc:
        log.error("could not audit a refused %s: %s", action, type(exc).__name__)
        return False
    return True


async def read_context(
    request: Request, access: Annotated[Access, Depends(require(Scope.READ))]
) -> RequestContext:
    return _context(request, access, None)


async def write_context(
    request: Request,
    access: Annotated[Access, Depends(require(Scope.WRITE))],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Retry-safe writes: the same key with the same body returns the "
            "first response again (kept at least 24 hours).",
        ),
    ] = None,
) -> RequestContext:
    return _context(request, access, idempotency_key)


async def admin_context(
    request: Request, access: Annotated[Access, Depends(require(Scope.ADMIN))]
) -> RequestContext:
    return _context(request, access, None)


ReadContext = Annotated[RequestContext, Depends(read_context)]
WriteContext = Annotated[RequestContext, Depends(write_context)]
AdminContext = Annotated[RequestContext, Depends(admin_context)]

Limit = Annotated[int | None, Query(ge=1, le=200, description="Page size (default 50, max 200)")]
Cursor = Annotated[str | None, Query(max_length=500, description="From `next_cursor`")]

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=200,
        description="Copy the `ETag` response header of your last GET of this record, quotes "
        'included (e.g. `"1"`); `*` matches any version',
    ),
]


def reason_given(query_reason: str | None, body_reason: str | None) -> str:
    """DELETE takes its `reason` as a query parameter or a body field (the body wins)."""
    why = body_reason if body_reason is not None else query_reason
    if why is None:
        raise InvalidInput("/reason", "is required (as a query parameter or a body field)")
    return why
