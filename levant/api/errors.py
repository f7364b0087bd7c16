"""API errors in the caller's dialect, and the handlers that guarantee no 500 leaks a trace.

Mistral's shape: ``{"object": "error", "message", "type", "param", "code"}``.
OpenAI's SDK reads ``{"error": {"message", "type", "param", "code"}}``; callers
identified as OpenAI clients get that shape instead (see ``dialect.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from levant.api.dialect import Dialect, detect_dialect

log = logging.getLogger("levant.api")


class APIError(Exception):
    """An error the client caused or should know about; carries its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers


def error_body(err: APIError, dialect: Dialect) -> dict[str, Any]:
    fields = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    if dialect == "openai":
        return {"error": fields}
    return {"object": "error", **fields}


def error_response(request: Request, err: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(err, detect_dialect(request)), status_code=err.status, headers=err.headers
    )


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def _validation_to_api_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "invalid JSON")
        return APIError(400, f"Request body is not valid JSON: {reason}", code="invalid_json")
    first = errors[0]
    param = _loc_to_param(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        message = f"Missing required field: {param}"
    elif param:
        message = f"Invalid value for {param}: {msg}"
    else:
        message = msg
    extra = len(errors) - 1
    if extra:
        message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return APIError(422, message, param=param, code="invalid_value")


_STATUS_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, _validation_to_api_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route for {request.method} {request.url.path}"
        err = APIError(exc.status_code, message, type=kind)
        return error_response(request, err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the type only: messages can carry request content (prompts).
        log.error(
            "internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        err = APIError(500, "Internal server error", type="internal_error")
        return error_response(request, err)
