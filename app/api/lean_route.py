"""`LeanRoute`: FastAPI's request handling, with the per-request work that only depends on the
route done once, when the route is built (docs/decisions/0011-lean-routes-and-cheaper-reads.md).

FastAPI's own handler re-derives on every request what never changes for a route: which
dependencies are coroutines, the endpoint's error context, the content-type of the body (through
`email.message`), and it parses the JSON body a second time after `BodyGuard` already did. Its
response path validates a model the endpoint itself just built, before serializing it. This
subclass plans the route's dependency tree once and then, per request:

- takes the JSON value `BodyGuard` parsed (strictly, once) instead of parsing the body again;
- solves the planned tree with FastAPI's own parameter and body functions
  (`request_params_to_args`, `request_body_to_args`), in FastAPI's order, with FastAPI's
  per-request dependency cache, so values and validation errors are the same;
- serializes a returned instance of the route's response model with the route's own serializer
  (the bytes FastAPI would send) without validating it again.

Whatever the plan does not cover falls back, whole, to FastAPI's handler: a route whose tree has
a generator dependency, background tasks, a `Response` or security-scopes parameter, a form body
or a concurrency limit (decided when the route is built); a request while dependency overrides
are set, or whose body `BodyGuard` did not parse as `application/json` (decided per request).
The OpenAPI document and route introspection are untouched: only `get_route_handler` changes.
`add_routes` puts a router's routes into the app itself, instead of `include_router` (see it).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, params
from fastapi import routing as fastapi_routing
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    _validate_value_with_model_field,
    request_body_to_args,
    request_params_to_args,
)
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, request_response, serialize_response
from fastapi.utils import is_body_allowed_for_status_code
from pydantic import BaseModel
from pydantic_core import PydanticUndefined as Undefined
from starlette._utils import get_route_path
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

PARSED_BODY_KEY = "psoriasis.json_body"
"""Where `BodyGuard` leaves the JSON value of an `application/json` body it parsed."""

_NO_BODY: Any = object()
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True, slots=True)
class _Param:
    """A path, query, header or cookie parameter, with what FastAPI works out about it on every
    request (its aliases, whether it is a sequence) worked out once."""

    field: ModelField
    aliases: tuple[tuple[str, str], ...]  # (validation alias, request key), FastAPI's order
    source: str  # "path", "query", "header", "cookie"
    sequence: bool  # a list-like annotation: every value of a repeated key, [] as missing
    from_list: bool  # ... read with getlist (not a `Json[...]` field)


def _plan_params(fields: list[ModelField]) -> tuple[_Param, ...] | None:
    """The planned parameters of one source, or None when one of them is a parameter model
    (a `BaseModel` of query/header/cookie values), left to FastAPI's own function."""
    planned = []
    for field in fields:
        if _get_param_model(field) is not None:
            return None
        info = field.field_info
        assert isinstance(info, params.Param)
        sequence = field_annotation_is_sequence(info.annotation)
        planned.append(
            _Param(
                field=field,
                aliases=tuple(_get_param_aliases(field)),
                source=info.in_.value,
                sequence=sequence,
                from_list=sequence and not _is_json_field(field),
            )
        )
    return tuple(planned)


def _params_to_args(
    planned: tuple[_Param, ...] | None,
    fields: list[ModelField],
    received: Mapping[str, Any],
) -> tuple[dict[str, Any], list[Any]]:
    """`request_params_to_args(fields, received)` with the per-field analysis planned: the same
    alias choice, value extraction and validation (FastAPI's `_validate_value_with_model_field`),
    so the same values and errors (`tests/unit/test_lean_params.py` compares them)."""
    if planned is None:
        return request_params_to_args(fields, received)
    values: dict[str, Any] = {}
    errors: list[Any] = []
    multi = received if isinstance(received, ImmutableMultiDict | Headers) else None
    for param in planned:
        aliases = param.aliases
        alias = aliases[0][1]
        if len(aliases) > 1:
            alias = next((key for _, key in aliases if key in received), alias)
        if param.from_list and multi is not None:
            value: Any = multi.getlist(alias)
        else:
            value = received.get(alias, None)
        if value is None or (param.sequence and len(value) == 0):
            value = Undefined  # defaults are applied during validation, as FastAPI does
        validated, found = _validate_value_with_model_field(
            field=param.field, value=value, values=values, loc=(param.source, alias)
        )
        if found:
            errors.extend(found)
        else:
            values[param.field.name] = validated
    return values, errors


@dataclass(frozen=True, slots=True)
class _Node:
    """One dependant (a dependency, or the endpoint itself), planned."""

    call: Callable[..., Any]
    name: str | None
    is_coroutine: bool
    use_cache: bool
    children: tuple[_Node, ...]
    # (source, its fields, their plan) for each source with parameters, in FastAPI's order
    params: tuple[tuple[str, list[ModelField], tuple[_Param, ...] | None], ...]
    body_params: list[ModelField]
    request_param_name: str | None
    http_connection_param_name: str | None


def _is_coroutine(call: Callable[..., Any]) -> bool:
    if inspect.isroutine(call):
        return inspect.iscoroutinefunction(call)
    return inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def _is_generator(call: Callable[..., Any]) -> bool:
    target = call if inspect.isroutine(call) else getattr(call, "__call__", None)  # noqa: B004
    return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)


def _plan(dependant: Dependant) -> _Node | None:
    """The planned tree, or None when it uses something only FastAPI's handler does."""
    call = dependant.call
    if (
        call is None
        or _is_generator(call)
        or dependant.websocket_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.own_oauth_scopes
        or dependant.parent_oauth_scopes
        or dependant.concurrency is not None
        or any(isinstance(f.field_info, params.Form) for f in dependant.body_params)
    ):
        return None
    children = tuple(_plan(sub) for sub in dependant.dependencies)
    if any(child is None for child in children):
        return None
    return _Node(
        call=call,
        name=dependant.name,
        is_coroutine=_is_coroutine(call),
        use_cache=dependant.use_cache,
        children=children,  # type: ignore[arg-type]  # None excluded above
        params=tuple(
            (source, fields, _plan_params(fields))
            for source, fields in (
                ("path", dependant.path_params),
                ("query", dependant.query_params),
                ("header", dependant.header_params),
                ("cookie", dependant.cookie_params),
            )
            if fields
        ),
        body_params=dependant.body_params,
        request_param_name=dependant.request_param_name,
        http_connection_param_name=dependant.http_connection_param_name,
    )


def _received(request: Request, source: str) -> Mapping[str, Any]:
    if source == "path":
        return request.path_params
    if source == "query":
        return request.query_params
    if source == "header":
        return request.headers
    return request.cookies


def _take(
    values: dict[str, Any], errors: list[Any], solved: tuple[dict[str, Any], list[Any]]
) -> None:
    values.update(solved[0])
    errors.extend(solved[1])


async def _solve(
    node: _Node, request: Request, body: Any, embed: bool, cache: dict[int, Any]
) -> tuple[dict[str, Any], list[Any]]:
    """`fastapi.dependencies.utils.solve_dependencies` for a planned tree: the same order
    (sub-dependencies, then path, query, header, cookie and body parameters), the same skipping
    of a sub-dependency whose parameters failed, the same per-request cache."""
    values: dict[str, Any] = {}
    errors: list[Any] = []
    for child in node.children:
        sub_values, sub_errors = await _solve(child, request, body, embed, cache)
        if sub_errors:
            errors.extend(sub_errors)
            continue
        key = id(child.call)
        if child.use_cache and key in cache:
            solved = cache[key]
        elif child.is_coroutine:
            solved = await child.call(**sub_values)
        else:
            solved = await run_in_threadpool(child.call, **sub_values)
        if child.name is not None:
            values[child.name] = solved
        cache.setdefault(key, solved)
    # Each source is read only when the node has parameters there (Request builds them lazily).
    for source, fields, planned in node.params:
        _take(values, errors, _params_to_args(planned, fields, _received(request, source)))
    if node.body_params:
        body_values, body_errors = await request_body_to_args(
            body_fields=node.body_params, received_body=body, embed_body_fields=embed
        )
        values.update(body_values)
        errors.extend(body_errors)
    if node.http_connection_param_name:
        values[node.http_connection_param_name] = request
    if node.request_param_name:
        values[node.request_param_name] = request
    return values, errors


def _response_model_class(route: APIRoute) -> type[BaseModel] | None:
    model = route.response_model
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    return None


class LeanRoute(APIRoute):
    """An `APIRoute` whose handler is planned once (module docstring); every router of the
    service uses it (`route_class=LeanRoute`). `planned` tells whether this route got the
    planned handler or FastAPI's own."""

    planned: bool = False

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._literal_start = self.path.partition("{")[0]  # the path up to its first parameter

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's (and FastAPI's) matching, which every request runs for each route in turn
        until one matches, skipped for a path that cannot match: one outside the route's
        literal start, which its pattern begins with."""
        if scope["type"] == "http" and not get_route_path(scope).startswith(self._literal_start):
            return Match.NONE, {}
        return super().matches(scope)

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        route = _effective(self)
        plan = _plan(route.dependant)
        self.planned = plan is not None and route.stream_item_field is None
        if plan is None or not self.planned:
            return standard
        return _lean_handler(route, _response_model_class(self), plan, standard)


def _effective(route: APIRoute) -> Any:
    """What FastAPI's own `get_route_handler` builds from: an included route is built again for
    each inclusion, from the inclusion's context (its dependencies, overrides provider and
    default response class), which FastAPI hands over in a context variable."""
    var = getattr(fastapi_routing, "_effective_route_context_var", None)
    context = None if var is None else var.get()
    if context is not None and context.original_route is route:
        return context
    return route


def _lean_handler(
    route: Any, model_class: type[BaseModel] | None, plan: _Node, standard: Handler
) -> Handler:
    """The planned handler of `route` (a route, or an inclusion's context of it)."""
    overrides = route.dependency_overrides_provider
    has_body = route.body_field is not None
    embed = route._embed_body_fields
    response_field = route.response_field
    status = route.status_code or 200
    # FastAPI's own choice: its Rust-side JSON dump when the route has a response model and
    # no response class of its own, else the response class renders the encoded content.
    dump_json = response_field is not None and isinstance(route.response_class, DefaultPlaceholder)
    response_class: type[Response] = (
        route.response_class.value
        if isinstance(route.response_class, DefaultPlaceholder)
        else route.response_class
    )
    dump_options: dict[str, Any] = {
        "include": route.response_model_include,
        "exclude": route.response_model_exclude,
        "by_alias": route.response_model_by_alias,
        "exclude_unset": route.response_model_exclude_unset,
        "exclude_defaults": route.response_model_exclude_defaults,
        "exclude_none": route.response_model_exclude_none,
    }

    async def handler(request: Request) -> Response:
        if overrides is not None and getattr(overrides, "dependency_overrides", None):
            return await standard(request)
        body: Any = _NO_BODY
        if has_body and await request.body():
            body = request.scope.get(PARSED_BODY_KEY, _NO_BODY)
            if body is _NO_BODY:  # not parsed by BodyGuard as application/json
                return await standard(request)
        values, errors = await _solve(
            plan, request, Undefined if body is _NO_BODY else body, embed, {}
        )
        if errors:
            raise RequestValidationError(errors, body=None if body is _NO_BODY else body)
        if plan.is_coroutine:
            raw = await plan.call(**values)
        else:
            raw = await run_in_threadpool(plan.call, **values)
        if isinstance(raw, Response):
            return raw
        if not dump_json:
            content: Any = await serialize_response(
                field=response_field,
                response_content=raw,
                is_coroutine=plan.is_coroutine,
                **dump_options,
            )
            response: Response = response_class(content, status_code=status)
        else:
            assert response_field is not None  # dump_json needs one
            if model_class is not None and type(raw) is model_class:
                # Built by the endpoint from its own model: validating it again is a no-op.
                content = response_field.serialize_json(raw, **dump_options)
            else:
                content = await serialize_response(
                    field=response_field,
                    response_content=raw,
                    is_coroutine=plan.is_coroutine,
                    dump_json=True,
                    **dump_options,
                )
            response = Response(content=content, media_type="application/json", status_code=status)
        if not is_body_allowed_for_status_code(status):
            response.body = b""
        return response

    return handler


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """`app.include_router(router)` for a router whose routes need nothing from inclusion: they
    become the app's own routes, matched once per request. FastAPI (0.165) wraps an included
    router in an `_IncludedRouter` that every request is matched through twice (once to choose,
    once to handle), with per-request scope bookkeeping for each candidate: a fifth of a
    recorded assessment's time on the event loop (yappi), for nothing here. Our routers carry
    only a prefix and tags, which FastAPI applies to each route when it is declared (the OpenAPI
    document is byte-identical; `tests/test_openapi.py` would see a difference); anything that
    inclusion would apply later is refused here rather than silently dropped. Each app gets its
    own copy of each route, built with the app as its dependency-overrides provider, as
    inclusion does (a module's router is shared by every app made in the process)."""
    if (
        router.dependencies
        or router.responses
        or router.callbacks
        or router.deprecated
        or router.on_startup
        or router.on_shutdown
        or not isinstance(router.default_response_class, DefaultPlaceholder)
    ):
        raise ValueError("this router needs app.include_router: it sets more than prefix/tags")
    for route in router.routes:
        if isinstance(route, APIRoute):
            if getattr(route, "max_body_size", None) is not None:
                raise ValueError(f"{route.path} has a body limit of its own: include its router")
            route = copy.copy(route)
            route.dependency_overrides_provider = app
            route.app = request_response(route.get_route_handler())
        app.router.routes.append(route)
