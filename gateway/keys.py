"""API keys: `rg-` + 32 random bytes (urlsafe base64). Only the SHA-256 is ever stored."""

from __future__ import annotations

import hashlib
import secrets
import time

from gateway.store.base import ApiKey

__all__ = ["KEY_PREFIX", "hash_key", "new_key"]

KEY_PREFIX = "rg-"


def hash_key(secret: str) -> str:
    """Lower-case hex SHA-256 of the full secret, as stored and as written in the config."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_key(tenant_id: str, name: str = "", expires_at: float | None = None) -> tuple[str, ApiKey]:
    """Make a fresh key for `tenant_id`; return (secret, record). Show the secret once."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id="key_" + secrets.token_hex(8),
        tenant_id=tenant_id,
        key_sha256=hash_key(secret),
        name=name,
        prefix=secret[:7],
        created_at=time.time(),
        expires_at=expires_at,
    )
    return secret, record
