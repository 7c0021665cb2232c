"""Test helpers for the PII guard (cf. `mitmproxy.test.taddons`).

`shared_engine()` builds one `PiiEngine` per process (building takes a second or
two), so every test module and the gateway's tests can share it.
"""

from __future__ import annotations

import functools

from rails.base import GuardContext
from rails.pii.engine import PiiEngine

__all__ = ["make_ctx", "shared_engine"]


@functools.cache
def shared_engine() -> PiiEngine:
    """The process-wide test engine (no NER model)."""
    return PiiEngine.build()


def make_ctx(
    tenant: str = "acme", *, secret: bytes | None = None, request: str = "req-1"
) -> GuardContext:
    """A fresh per-request context; the tenant secret defaults to one derived from `tenant`."""
    return GuardContext(
        tenant_id=tenant,
        request_id=request,
        model="gpt-test",
        tenant_secret=secret if secret is not None else f"secret-of-{tenant}".encode(),
    )
