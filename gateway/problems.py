"""API conventions shared by every endpoint: errors as RFC 9457 problem details, unknown query
parameters refused.

Every error is ``application/problem+json``: ``type``, ``title``, ``status``, ``detail``, the
``instance`` path, and for invalid input ``errors`` with the offending ``field`` and its ``reason``.
The OAuth 2.0 endpoints answer RFC 6749's ``{"error", "error_description"}`` instead (a malformed
token request is a 400 ``invalid_request``), which OAuth clients parse.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

API_PREFIX = "/api/v1"
OAUTH_PREFIX = f"{API_PREFIX}/oauth/"
PROBLEM = "application/problem+json"

_known_parameters: dict[int, frozenset[str]] = {}


def problem(status: int, detail: str, instance: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail,
                            "instance": instance}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(location: tuple[Any, ...]) -> str:
    """``("body", "parts", 3)`` -> ``body.parts[3]``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def install_problem_responses(api: FastAPI) -> None:
    @api.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error.detail, dict) and "error" in error.detail:  # RFC 6749 token errors
            return JSONResponse(error.detail, status_code=error.status_code, headers=error.headers)
        return problem(error.status_code, str(error.detail), request.url.path, headers=error.headers)

    @api.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(tuple(e["loc"])), "reason": e["msg"]} for e in error.errors()]
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        if request.url.path.startswith(OAUTH_PREFIX):  # RFC 6749 5.2: a malformed token request is a 400
            return JSONResponse({"error": "invalid_request", "error_description": summary}, status_code=400)
        return problem(422, f"invalid request: {summary}", request.url.path, errors)

    @api.exception_handler(Exception)
    async def server_problem(request: Request, error: Exception) -> JSONResponse:
        # The cause goes to the log (by the server), never to the client.
        return problem(500, "the gateway failed on this request; the log has the details", request.url.path)


OAUTH_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "enum": ["invalid_request", "invalid_grant", "slow_down"]},
        "error_description": {"type": "string"}},
}
PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["field", "reason"], "properties": {
            "field": {"type": "string"}, "reason": {"type": "string"}}}},
    },
}
# What any endpoint may answer besides its own responses.
COMMON_PROBLEMS = {"400": "unknown query parameter", "401": "not signed in", "403": "the role may not do this",
                   "413": "request body too large", "422": "invalid request", "500": "the gateway failed"}


def document_problems(api: FastAPI) -> None:
    """Make the OpenAPI document say what errors really are: problem+json for every error status of
    every endpoint (FastAPI's own 422 schema is replaced), and RFC 6749 errors for the OAuth endpoints."""
    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        document = FastAPI.openapi(api)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"], schemas["OAuthError"] = PROBLEM_SCHEMA, OAUTH_ERROR_SCHEMA
        problem_content = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        oauth_content = {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}
        for path, methods in document["paths"].items():
            if path.startswith(OAUTH_PREFIX):
                for operation in methods.values():
                    responses = operation.setdefault("responses", {})
                    responses.pop("422", None)
                    responses.setdefault("400", {"description": "invalid_request or invalid_grant"})
                    responses.setdefault("413", {"description": COMMON_PROBLEMS["413"]})
                    responses.setdefault("500", {"description": COMMON_PROBLEMS["500"]})
                    for status, response in responses.items():
                        if status in ("400", "429"):
                            response["content"] = oauth_content
                        elif status.isdigit() and int(status) >= 400:
                            response["content"] = problem_content
                continue
            if not path.startswith(API_PREFIX):
                continue
            for operation in methods.values():
                responses = operation.setdefault("responses", {})
                for status, description in COMMON_PROBLEMS.items():
                    responses.setdefault(status, {"description": description})
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400:
                        response["content"] = problem_content
        api.openapi_schema = document
        return document

    api.openapi = openapi  # type: ignore[method-assign]


def _query_parameters(dependant: Dependant) -> set[str]:
    """Every query parameter an endpoint declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameters(sub)
    return names


def reject_unknown_parameters(request: Request) -> None:
    """A misspelt or unsupported filter must not silently return everything (``failure_mode=VIB``)."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    known = _known_parameters.get(id(route))
    if known is None:
        known = _known_parameters[id(route)] = frozenset(_query_parameters(route.dependant))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise HTTPException(400, f"unknown query parameter(s) {', '.join(unknown)}; this endpoint takes: "
                                 f"{', '.join(sorted(known)) or 'none'}")
