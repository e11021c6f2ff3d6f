"""The API's error shapes, one per API: Dream Machine `{"detail": ...}`, OpenAI `{"error": {...}}`.

OpenAI errors also carry `detail`, so a client of either API reads any error. Every 4xx the server
sends (routes, the request gate, FastAPI's own 404/405/422) goes through `error_response`, so the
shape depends only on the path. The OpenAPI document declares these bodies (`ERROR_RESPONSES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

OPENAI_PREFIX = "/v1/videos"

# OpenAI's `code` for a status where the route did not name one (what api.openai.com sends).
OPENAI_CODES = {
    401: "invalid_api_key",
    402: "insufficient_quota",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "rate_limit_exceeded",
}


def is_openai(path: str) -> bool:
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def error_body(path: str, status: int, message: str, param: str | None = None, code: str | None = None) -> Any:
    if not is_openai(path):
        return {"detail": message}
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = code or OPENAI_CODES.get(status)
    return {"detail": message, "error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    path: str,
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(path, status, message, param, code), status_code=status, headers=headers)


class Error(BaseModel):
    """A Dream Machine error (docs/reference/luma-api.md §5)."""

    detail: str


class Unprocessable(BaseModel):
    """A 422: FastAPI's list of validation errors, or a route's own one-line reason (the planner's)."""

    detail: str | list[dict[str, Any]]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """An OpenAI error, with Noor's `detail` beside it."""

    error: OpenAIErrorDetail
    detail: str


def responses(model: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the error body's schema."""
    what = {
        400: "Bad request: the message names the field and the value",
        401: "Missing or invalid API key",
        402: "Not enough credits for this generation",
        403: "Forbidden: this key may not do that here",
        404: "Not found (another tenant's resource is a 404 too)",
        413: "Request body too large",
        422: "The body does not fit the schema, or a value is out of range",
        429: "Too many requests; see Retry-After",
        503: "The tenant's region cannot be reached now; see Retry-After",
    }
    return {status: {"model": model, "description": what[status]} for status in statuses}
