"""ASGI factory for multi-worker serving: `uvicorn gateway.asgi:app --factory`.

Each worker loads the config named by `RAILGATE_CONFIG` (or the bundled default).
"""

from __future__ import annotations

from gateway.app import asgi_app, create_app
from gateway.config import load_settings
from gateway.frontdoor import FrontDoor

__all__ = ["app"]


def app() -> FrontDoor:
    return asgi_app(create_app(load_settings()))
