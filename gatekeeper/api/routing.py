"""Endpoints declared with their request and response models; `/openapi.json` is built from them.

`@endpoint(bp, "/v1/agents", methods=["POST"], body=AgentCreate, response=AgentStatus, roles=...)`
validates the JSON body against the model (unknown fields, wrong types and oversize bodies are
refused with the field named), checks the bearer token's role, and passes `body=` and `caller=`
to the view. The view returns a model, a list of them (declare `response=list[Model]`), a plain
dict shaped like `response`, or a ready `Response` (declare its `media_type`), and an optional
status code. `observe=` is called with the seconds the route took, refusals included.

Bodies are read up to GATEKEEPER_MAX_BODY_BYTES whatever their framing: a chunked body one byte
over the limit is a 413, never a truncated body read as JSON.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from pydantic import BaseModel, TypeAdapter, ValidationError

from gatekeeper.api.auth import Caller, authenticate, authenticate_deferred
from gatekeeper.api.fields import NO_NUL
from gatekeeper.errors import BadRequest, PayloadTooLarge
from gatekeeper.token_cache import MarkMoved

JSON = "application/json"


@dataclass(frozen=True)
class EndpointSpec:
    """What `/openapi.json` says of one route."""

    summary: str
    body: type[BaseModel] | None
    response: Any  # a model, list[model], or None
    roles: tuple[str, ...]
    status: int
    query: type[BaseModel] | None = None
    media_type: str = JSON


def endpoint(bp: Blueprint, rule: str, *, methods: Sequence[str], roles: Sequence[str],
             body: type[BaseModel] | None = None, response: Any = None,
             query: type[BaseModel] | None = None, status: int = 200, media_type: str = JSON,
             observe: Callable[[float], None] | None = None, mark_in_tx: bool = False) -> Callable[..., Any]:
    """Register a JSON route with validated body/query, bearer auth and a documented response.

    `mark_in_tx`: the view takes `mark=` and its transaction checks the token revocation mark
    (api/auth.py `authenticate_deferred`); when it moved, the request is authenticated again and run once more.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        spec = EndpointSpec((view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else "",
                            body, response, tuple(roles), status, query, media_type)

        @functools.wraps(view)
        def wrapper(**kwargs: Any) -> Any:
            header = request.environ.get("HTTP_AUTHORIZATION")
            if mark_in_tx:
                caller, kwargs["mark"] = authenticate_deferred(header, roles=spec.roles)
            else:
                caller = authenticate(header, roles=spec.roles)
            if body is not None:
                kwargs["body"] = parse_body(body)
            if query is not None:
                kwargs["query"] = parse_model(query, request.args.to_dict())
            try:
                return render(view(caller=caller, **kwargs), default_status=status)
            except MarkMoved:
                pass  # a token was revoked since this caller was cached: check it again, then run once more
            kwargs["mark"] = None
            return render(view(caller=authenticate(header, roles=spec.roles), **kwargs), default_status=status)

        @functools.wraps(view)
        def timed(**kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return wrapper(**kwargs)
            finally:
                observe(time.perf_counter() - started)  # type: ignore[misc]

        handler = wrapper if observe is None else timed
        handler.gatekeeper_spec = spec  # type: ignore[attr-defined]
        bp.add_url_rule(rule, view.__name__, handler, methods=list(methods))
        return handler

    return decorate


def parse_body(model: type[BaseModel]) -> Any:
    """Validate the request's JSON body against `model`, or raise a 4xx naming the field."""
    limit = current_app.config["GATEKEEPER_SETTINGS"].max_body_bytes
    length = request.content_length
    if (length or 0) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    # Read the WSGI stream itself: werkzeug's stream wrapper is measurable per decision, and for a
    # chunked body (no length) it stops quietly at the limit, so one byte more is read to tell.
    raw = read_stream(request.environ, length, limit=limit)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    if not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _bad_request(exc) from None


def read_stream(environ: dict[str, Any], length: int | None, *, limit: int) -> bytes:
    """Read the body (`length` bytes, or up to `limit` + 1 when chunked); a malformed chunk is a 400."""
    if length is None and not environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not end the stream: nothing can be read safely
    try:
        return bytes(environ["wsgi.input"].read(length if length is not None else limit + 1))
    except Exception as exc:  # the server's parser raises its own types (gunicorn: InvalidChunkSize, ...)
        raise BadRequest(f"the body could not be read: {type(exc).__name__}") from None


def parse_model(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate query-string values (lax: they arrive as strings)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _bad_request(exc) from None


def _bad_request(exc: ValidationError) -> BadRequest:
    errors = exc.errors()
    first = errors[0]
    field = _field(first["loc"]) or None
    if first["type"] == "json_invalid":
        return BadRequest(f"the body is not valid JSON (or not UTF-8): {first['msg']}")
    if first["type"] == "model_type" or field is None:
        return BadRequest("the body must be a JSON object")
    messages = "; ".join(f"{_field(e['loc'])}: {_message(e)}" for e in errors[:5])
    return BadRequest(messages, field=field)


def _field(loc: Any) -> str:
    # A location may hold a key the caller chose (alert labels): never echo a NUL or a novel.
    return ".".join(str(part).replace("\x00", "\\0")[:100] for part in loc)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required"
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NO_NUL:
        return "must not contain a NUL character"
    return str(error["msg"])


def render(result: Any, *, default_status: int = 200) -> Response:
    """Turn a view's return value (model, list of models, dict, or (value, status)) into a response."""
    status = default_status
    if isinstance(result, tuple):
        result, status = result
    if isinstance(result, Response):
        result.status_code = status
        return result
    # One encoder straight into a Response: Flask's JSON provider is measurable per decision.
    body = _ENCODER.encode(_plain(result))
    return Response(body + "\n", status=status, mimetype="application/json")


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def openapi_document(app: Flask) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document from every registered endpoint's models."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        spec = getattr(app.view_functions[rule.endpoint], "gatekeeper_spec", None)
        if spec is None:
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(spec, rule.arguments, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Gatekeeper", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(spec: EndpointSpec, arguments: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": spec.summary,
        "description": f"Roles: {', '.join(spec.roles) or 'none (public)'}.",
        "parameters": [{"name": a, "in": "path", "required": True, "schema": {"type": "string"}}
                       for a in sorted(arguments)],
        "responses": {str(spec.status): _response(spec, schemas),
                      "4XX": {"description": "Error", "content": _json_ref(_error_schema(schemas))},
                      "503": {"description": "The database (or what the route reads) is unavailable",
                              "content": _json_ref(_error_schema(schemas))}},
    }
    if spec.query is not None:
        props = spec.query.model_json_schema()["properties"]
        operation["parameters"] += [{"name": n, "in": "query", "schema": s} for n, s in props.items()]
    if spec.body is not None:
        # A body whose every field is optional may be left out: the route reads nothing as `{}`.
        required = any(f.is_required() for f in spec.body.model_fields.values())
        operation["requestBody"] = {"required": required, "content": _json_ref(_schema_ref(spec.body, schemas))}
    if not spec.roles:
        operation["security"] = []
    return operation


def _response(spec: EndpointSpec, schemas: dict[str, Any]) -> dict[str, Any]:
    if spec.media_type != JSON:
        return {"description": "OK", "content": {spec.media_type: {"schema": {"type": "string"}}}}
    if spec.response is None:
        return {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}
    return {"description": "OK", "content": {JSON: {"schema": _schema(spec.response, schemas)}}}


def _schema(response: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of a model (a $ref) or of list[model] (an array of $refs)."""
    if isinstance(response, type) and issubclass(response, BaseModel):
        return {"$ref": _schema_ref(response, schemas)}
    schema = TypeAdapter(response).json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    schemas.update(schema.pop("$defs", {}))
    return schema


def _schema_ref(model: type[BaseModel], schemas: dict[str, Any]) -> str:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return f"#/components/schemas/{model.__name__}"


def _error_schema(schemas: dict[str, Any]) -> str:
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}},
    }
    return "#/components/schemas/Error"


def _json_ref(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": ref}}}


__all__ = ["Caller", "EndpointSpec", "endpoint", "openapi_document", "parse_body", "render"]
