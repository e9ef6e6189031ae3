"""Turn pydantic's validation errors into `{"pointer", "detail"}` items that name the rule.

The rule (e.g. "must be an integer from 0 to 4") is read from the JSON schema of the model the
route validated against, so the message always states the field's full allowed range, not only
the bound that was crossed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, cast

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

JsonSchema = dict[str, Any]


@lru_cache(maxsize=256)
def _schema_for(annotation: Any) -> JsonSchema:
    return TypeAdapter(annotation).json_schema()


def _body_schema(request: Request) -> JsonSchema | None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return None
    try:
        return _schema_for(cast(Any, route.body_field.field_info.annotation))
    except Exception:  # an unhashable or odd annotation: fall back to pydantic's message
        return None


def _resolve(schema: JsonSchema, root: JsonSchema) -> JsonSchema:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root.get("$defs", {}).get(name, {})
    options = schema.get("anyOf")
    if options:
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) == 1:
            return _resolve(non_null[0], root)
    return schema


def _field_schema(root: JsonSchema, path: tuple[Any, ...]) -> JsonSchema | None:
    node = _resolve(root, root)
    for part in path:
        if isinstance(part, int):
            node = _resolve(node.get("items", {}), root)
        elif part in node.get("properties", {}):
            node = _resolve(node["properties"][part], root)
        elif isinstance(node.get("additionalProperties"), dict):
            node = _resolve(node["additionalProperties"], root)
        else:
            return None
    return node


def _fmt(number: Any) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _rule(schema: JsonSchema | None) -> str | None:
    if not schema:
        return None
    kind = schema.get("type")
    low, high = schema.get("minimum"), schema.get("maximum")
    if "enum" in schema:
        return "must be one of: " + ", ".join(str(v) for v in schema["enum"])
    noun = {"integer": "an integer", "number": "a number"}.get(kind or "")
    if noun:
        if low is not None and high is not None:
            return f"must be {noun} from {_fmt(low)} to {_fmt(high)}"
        if low is not None:
            return f"must be {noun} of at least {_fmt(low)}"
        if high is not None:
            return f"must be {noun} of at most {_fmt(high)}"
        return f"must be {noun}"
    if kind == "boolean":
        return "must be true or false"
    if kind == "string":
        if schema.get("format") == "date":
            return "must be a date in the form YYYY-MM-DD"
        if schema.get("format") == "uuid":
            return "must be a UUID"
        if "maxLength" in schema:
            low = schema.get("minLength", 0)
            return f"must be a string of {low} to {schema['maxLength']} characters"
        return "must be a string"
    return None


_RANGE_TYPES = {
    "int_type",
    "int_parsing",
    "int_from_float",
    "float_type",
    "float_parsing",
    "finite_number",
    "greater_than_equal",
    "less_than_equal",
    "greater_than",
    "less_than",
    "bool_type",
    "bool_parsing",
    "string_type",
    "string_too_long",
    "string_too_short",
    "enum",
    "literal_error",
    "date_type",
    "date_parsing",
    "date_from_datetime_parsing",
    "uuid_type",
    "uuid_parsing",
}


def _detail(error: dict[str, Any], schema: JsonSchema | None) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not an allowed field"
    if kind in _RANGE_TYPES:
        rule = _rule(schema)
        if rule:
            return rule
        if kind in ("literal_error", "enum") and "expected" in error.get("ctx", {}):
            return f"must be one of: {error['ctx']['expected']}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a JSON object"
    if kind in ("list_type", "too_long", "too_short"):
        ctx = error.get("ctx", {})
        if kind == "too_long":
            return f"must have at most {ctx.get('max_length')} items"
        if kind == "too_short":
            return f"must have at least {ctx.get('min_length')} items"
        return "must be a JSON array"
    msg = str(error.get("msg", "is invalid"))
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _pointer(path: tuple[Any, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


_ROUTE_SCHEMAS: dict[int, tuple[APIRoute, dict[tuple[str, str], JsonSchema]]] = {}


def _parameter_schemas(route: APIRoute) -> dict[tuple[str, str], JsonSchema]:
    # Routes are not hashable in this FastAPI version: cache by identity.
    cached = _ROUTE_SCHEMAS.get(id(route))
    if cached is not None and cached[0] is route:
        return cached[1]
    schemas = _build_parameter_schemas(route)
    _ROUTE_SCHEMAS[id(route)] = (route, schemas)
    return schemas


def _build_parameter_schemas(route: APIRoute) -> dict[tuple[str, str], JsonSchema]:
    """JSON schemas of a route's path, query and header parameters, sub-dependencies included."""
    found: dict[tuple[str, str], JsonSchema] = {}
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        for where, params in (
            ("path", dependant.path_params),
            ("query", dependant.query_params),
            ("header", dependant.header_params),
        ):
            for param in params:
                info = param.field_info
                annotation: Any = info.annotation
                if info.metadata:
                    annotation = Annotated[(annotation, *info.metadata)]
                try:
                    schema = _schema_for(annotation)
                except Exception:  # noqa: S112 - no schema: pydantic's own message is used
                    continue
                found[(where, param.alias)] = _resolve(schema, schema)
    return found


def _parameter_schema(request: Request, where: str, name: Any) -> JsonSchema | None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or name is None:
        return None
    return _parameter_schemas(route).get((where, str(name)))


def describe_validation_errors(request: Request, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body_schema = _body_schema(request)
    items: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for error in raw:
        loc = tuple(error.get("loc", ()))
        where = loc[0] if loc else "body"
        path = loc[1:]
        if where == "body":
            schema = _field_schema(body_schema, path) if body_schema else None
            item = {"pointer": _pointer(path), "detail": _detail(error, schema)}
            key = (item["pointer"], item["detail"])
        else:
            schema = _parameter_schema(request, where, path[0] if path else None)
            item = {
                "parameter": str(path[0]) if path else where,
                "in": where,
                "detail": _detail(error, schema),
            }
            key = (item["parameter"], item["detail"])
        if key not in seen:
            seen.add(key)
            items.append(item)
    return items
