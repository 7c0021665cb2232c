"""Errors a client can see, and the one handler that renders them.

    GatewayError                  500 internal_error (never raised on purpose)
    ├── InvalidRequest            400 invalid_request_error
    │   └── ContentBlocked        400 content_filter
    ├── AuthError                 401 invalid_api_key
    ├── ModelNotAllowed           403 model_not_allowed
    ├── NotFound                  404 model_not_found / not_found
    ├── MethodNotAllowed          405 method_not_allowed
    ├── PayloadTooLarge           413 request_too_large
    ├── RateLimited               429 rate_limit_exceeded (+ Retry-After)
    │   └── QuotaExceeded         429 insufficient_quota (a budget is spent)
    ├── UpstreamError             502 upstream_error
    ├── UpstreamStatus            <upstream 4xx> body passed through unchanged
    ├── ClientDisconnected        499 client_disconnected (the client is gone; for records)
    ├── GuardUnavailable          503 guard_unavailable
    ├── LimitsUnavailable         503 limits_unavailable (store down, `fail_mode: closed`)
    └── UpstreamTimeout           504 upstream_timeout

Every error renders as `{"error": {"message", "type", "param", "code"}}`. Messages
are written by us and never quote prompts, answers or keys. The one exception is
`UpstreamStatus`: a provider's own 4xx answer goes to the client as the provider sent
it (it may quote the client's own input back to it); it is never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

__all__ = [
    "AuthError",
    "ClientDisconnected",
    "ContentBlocked",
    "GatewayError",
    "GuardUnavailable",
    "InvalidRequest",
    "LimitsUnavailable",
    "MethodNotAllowed",
    "ModelNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "Rendered",
    "UpstreamError",
    "UpstreamStatus",
    "UpstreamTimeout",
    "error_body",
    "exception_handlers",
    "render",
]

log = logging.getLogger("railgate")


class GatewayError(Exception):
    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    log_level: ClassVar[int] = logging.ERROR

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code  # type: ignore[misc]

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


class InvalidRequest(GatewayError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"
    log_level = logging.INFO


class ContentBlocked(InvalidRequest):
    code = "content_filter"


class AuthError(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"
    log_level = logging.INFO


class ModelNotAllowed(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "model_not_allowed"
    log_level = logging.INFO


class NotFound(GatewayError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"
    log_level = logging.INFO


class MethodNotAllowed(GatewayError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    log_level = logging.INFO


class PayloadTooLarge(GatewayError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"
    log_level = logging.INFO


class RateLimited(GatewayError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    log_level = logging.INFO


class QuotaExceeded(RateLimited):
    type = "insufficient_quota"
    code = "insufficient_quota"


class LimitsUnavailable(GatewayError):
    status_code = 503
    type = "server_error"
    code = "limits_unavailable"
    log_level = logging.WARNING


class UpstreamError(GatewayError):
    """The upstream could not be reached or answered something unusable."""

    status_code = 502
    type = "upstream_error"
    code = "upstream_error"
    log_level = logging.WARNING


class UpstreamStatus(GatewayError):
    """The upstream refused the request (4xx): its status and body go to the client as sent."""

    type = "upstream_error"
    code = "upstream_status"
    log_level = logging.INFO

    def __init__(self, status: int, content: bytes, content_type: str) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.status_code = status  # type: ignore[misc]  # what the client gets, and usage records
        self.content = content
        self.content_type = content_type


class ClientDisconnected(GatewayError):
    """The client closed the connection before the answer was ready (nginx's 499)."""

    status_code = 499
    type = "client_error"
    code = "client_disconnected"
    log_level = logging.DEBUG


class GuardUnavailable(GatewayError):
    status_code = 503
    type = "server_error"
    code = "guard_unavailable"
    log_level = logging.WARNING


class UpstreamTimeout(GatewayError):
    status_code = 504
    type = "timeout_error"
    code = "upstream_timeout"
    log_level = logging.WARNING


def error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


@dataclass(frozen=True, slots=True)
class Rendered:
    """An error as it goes on the wire."""

    status: int
    media_type: str
    headers: dict[str, str]
    body: bytes


def render(exc: GatewayError) -> Rendered:
    """The one place an error becomes a response (for Litestar's handler and the hot path)."""
    if isinstance(exc, UpstreamStatus):
        return Rendered(exc.status, exc.content_type, dict(exc.headers), exc.content)
    log.log(exc.log_level, "request failed: %s %s", exc.status_code, exc.code)
    return Rendered(exc.status_code, "application/json", dict(exc.headers), exc.body())


def _gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    out = render(exc)
    rid = request.scope.get("state", {}).get("request_id")
    if rid:
        out.headers["x-request-id"] = rid
    return Response(
        out.body, status_code=out.status, media_type=out.media_type, headers=out.headers
    )


_HTTP_MAP: dict[int, type[GatewayError]] = {
    400: InvalidRequest,
    401: AuthError,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Framework errors (routing, body size, parsing) in our shape; never echo their detail."""
    kind = _HTTP_MAP.get(exc.status_code)
    if kind is None:
        kind = InvalidRequest if exc.status_code < 500 else GatewayError
    messages = {
        NotFound: "Unknown path.",
        MethodNotAllowed: "Method not allowed for this path.",
        PayloadTooLarge: "Request body is too large.",
    }
    error = kind(
        messages.get(kind, "Invalid request." if exc.status_code < 500 else "Internal error.")
    )
    response = _gateway_error(request, error)
    if exc.status_code >= 400 and exc.status_code not in _HTTP_MAP and exc.status_code < 500:
        response.status_code = exc.status_code
    return response


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error (%s)", type(exc).__name__)
    return _gateway_error(request, GatewayError("Internal error."))


exception_handlers: ExceptionHandlersMap = {
    GatewayError: _gateway_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
