"""Errors only the admin API raises, on top of `gateway.errors`.

    GatewayError
    ├── PermissionDenied      403 permission_denied (a tenant key on an admin route,
    │                             or a tenant asking for another tenant's data)
    ├── Conflict              409 conflict (exists already, defined in the config file)
    └── InvalidPolicy         422 invalid_policy, with `details: [{"path", "reason"}]`
        └── InvalidRailsConfig  422 invalid_rails_config (an uploaded NeMo config), same `details`

Bodies and query strings that do not match their schema are 400 `invalid_request` with
`param` naming the field (`invalid_params`, a route-level handler for Litestar's
validation errors); messages describe the schema, never a key.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import orjson
from litestar import Request, Response
from litestar.exceptions import ValidationException

from gateway.errors import GatewayError, InvalidRequest, render

__all__ = ["Conflict", "InvalidPolicy", "InvalidRailsConfig", "PermissionDenied", "invalid_params"]


class PermissionDenied(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"
    log_level = logging.INFO


class Conflict(GatewayError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"
    log_level = logging.INFO


class InvalidPolicy(GatewayError):
    """A policy document was refused; the tenant's active policy is unchanged."""

    status_code = 422
    type = "invalid_request_error"
    code = "invalid_policy"
    log_level = logging.INFO
    what: ClassVar[str] = "policy"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(f"The {self.what} is invalid; `details` lists each problem.")
        self.problems = problems

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": None,
                    "code": self.code,
                    "details": [{"path": p, "reason": r} for p, r in self.problems],
                }
            }
        )


class InvalidRailsConfig(InvalidPolicy):
    """A rails config upload was refused; the stored versions are unchanged."""

    code = "invalid_rails_config"
    what = "rails config"


def invalid_params(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """Litestar's 400 for a body, path or query value that does not fit its schema."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    first = problems[0] if problems and isinstance(problems[0], dict) else {}
    reason = str(first.get("message") or "does not match the schema")
    key = first.get("key")
    param = key if isinstance(key, str) and key != "data" else None
    out = render(InvalidRequest(f"Invalid request: {reason}.", param=param))
    return Response(
        out.body, status_code=out.status, media_type=out.media_type, headers=out.headers
    )
