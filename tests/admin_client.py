"""A gateway with the admin API on a real port, and what admin tests share.

`serve_admin()` builds the app from a config, registers the admin routes when the app
does not have them yet, and serves it with uvicorn in a thread. The admin key comes
from the environment (`RAILGATE_ADMIN_KEY`, audited as `env`) and from the config
(`admin.keys`, audited as `ops`); the app reads the environment once, on its first
admin request, so `serve_admin()` makes one while the variable is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from gateway.app import asgi_app, create_app
from gateway.config import parse_settings
from gateway.keys import hash_key
from tests.conftest import UPSTREAM_KEY, UPSTREAM_KEY_ENV
from tests.servers import ServerThread

ADMIN_KEY = "adm-env-" + "e" * 40
"""The admin key in `RAILGATE_ADMIN_KEY` (audited as `env`)."""
OPS_KEY = "adm-ops-" + "f" * 40
"""The admin key hashed in the config (audited as `ops`)."""
ADMIN_CONFIG = {"keys": [{"id": "ops", "key_sha256": hash_key(OPS_KEY)}]}
ENV = {UPSTREAM_KEY_ENV: UPSTREAM_KEY}


@contextmanager
def serve_admin(raw: dict[str, Any], *, env_key: str | None = ADMIN_KEY) -> Iterator[str]:
    """Serve a gateway built from `raw` (its real ledger sink); yields its base URL."""
    env = {**ENV, **({"RAILGATE_ADMIN_KEY": env_key} if env_key is not None else {})}
    app = create_app(parse_settings(raw, ENV), env=env)
    with ServerThread(asgi_app(app)) as server:
        yield server.url


def admin_http(url: str, key: str = ADMIN_KEY) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30)


def eventually(check: Callable[[], Any], within: float = 10.0) -> Any:
    """Call `check` until it returns a truthy value (returned) or `within` s pass."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
