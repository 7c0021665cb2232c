"""Who may use the admin API: the route guard of `/admin/v1`.

Admin keys are `admin.keys` from the config (SHA-256 digests, each with an id for the
audit log) and, when the variable named by `admin.key_env` (`RAILGATE_ADMIN_KEY`) is set,
its value, audited as `env`. The presented key (`Authorization: Bearer …` or
`x-api-key`) is hashed and compared with every admin digest in constant time.

    no admin key configured     401 invalid_api_key ("admin access is not configured")
    an admin key                the handler runs; its id is the request's `actor`
    a usable tenant key         403 permission_denied
    anything else               401 invalid_api_key

Messages never echo the key. `tenant_only` guards the tenant-facing reports
(`/v1/usage`): any usable tenant key, 401 otherwise. The OpenAPI document names both as
bearer security schemes (`SECURITY_SCHEMES`; `x-api-key` works too).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Reference, SecurityRequirement, SecurityScheme

from gateway.admin.errors import PermissionDenied
from gateway.config import AdminSettings
from gateway.errors import AuthError
from gateway.keys import hash_key
from gateway.proxy import Proxy
from gateway.tenancy import Caller, extract_key

__all__ = [
    "ADMIN_SECURITY",
    "ENV_ACTOR",
    "SECURITY_SCHEMES",
    "TENANT_SECURITY",
    "AdminKeys",
    "actor_of",
    "admin_keys",
    "admin_only",
    "caller_of",
    "tenant_only",
]

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "adminKey": SecurityScheme(
        type="http",
        scheme="bearer",
        description="An admin key: `$RAILGATE_ADMIN_KEY` or one of `admin.keys` in the config"
        " (also accepted as `x-api-key`).",
    ),
    "tenantKey": SecurityScheme(
        type="http",
        scheme="bearer",
        description="A tenant's API key (also accepted as `x-api-key`).",
    ),
}
"""The OpenAPI document's security schemes (`components.securitySchemes`)."""
ADMIN_SECURITY: list[SecurityRequirement] = [{"adminKey": []}]
TENANT_SECURITY: list[SecurityRequirement] = [{"tenantKey": []}]

ENV_ACTOR = "env"
"""Audit id of the admin key taken from the environment."""
_STATE_KEY = "admin_keys"
_ACTOR = "admin_actor"
_CALLER = "tenant_caller"


class AdminKeys:
    """The admin keys of one app: SHA-256 digest and audit id of each."""

    def __init__(self, settings: AdminSettings, env: Mapping[str, str]) -> None:
        self.key_env = settings.key_env
        self._digests = [(entry.key_sha256.lower(), entry.id) for entry in settings.keys]
        secret = env.get(settings.key_env)
        if secret:
            self._digests.append((hash_key(secret), ENV_ACTOR))

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def actor(self, secret: str) -> str | None:
        """The id of the admin key `secret` is, else None. Compares with every digest."""
        digest = hash_key(secret)
        found = None
        for known, actor in self._digests:
            if hmac.compare_digest(known, digest):
                found = actor
        return found


def admin_keys(app: Litestar) -> AdminKeys:
    """The app's admin keys, read from its settings and `os.environ` on first use."""
    keys: AdminKeys | None = app.state.get(_STATE_KEY)
    if keys is None:
        keys = AdminKeys(app.state.settings.admin, os.environ)
        app.state[_STATE_KEY] = keys
    return keys


async def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Route guard of every admin route: let admin keys through, refuse everyone else."""
    keys = admin_keys(connection.app)
    if not keys.configured:
        raise AuthError(
            f"Admin access is not configured: set {keys.key_env} or `admin.keys` in the config."
        )
    secret = _presented(connection)
    if not secret:
        raise AuthError("Missing admin key. Send `Authorization: Bearer <admin key>`.")
    actor = keys.actor(secret)
    if actor is None:
        try:
            await _proxy(connection).auth.authenticate(secret)
        except AuthError:
            raise AuthError("Invalid admin key.") from None
        raise PermissionDenied("Tenant keys cannot use the admin API.")
    connection.state[_ACTOR] = actor


def actor_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The admin key id `admin_only` let through on this connection."""
    actor: str = connection.state[_ACTOR]
    return actor


async def tenant_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Route guard of tenant-facing reports: a usable tenant key, else 401."""
    connection.state[_CALLER] = await _proxy(connection).auth.authenticate(_presented(connection))


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The tenant and key `tenant_only` let through on this connection."""
    caller: Caller = connection.state[_CALLER]
    return caller


def _presented(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    headers = connection.headers
    return extract_key(headers.get("authorization"), headers.get("x-api-key"))


def _proxy(connection: ASGIConnection[Any, Any, Any, Any]) -> Proxy:
    proxy: Proxy = connection.app.state.proxy
    return proxy
