"""ASGI factory for multi-worker serving: `uvicorn gateway.asgi:app --factory`.

Each worker loads the config named by `RAILGATE_CONFIG` (or the bundled default), logs
like `railgate serve` does (level from `RAILGATE_LOG_LEVEL`, format from the config) and
reports errors to Sentry when `SENTRY_DSN` is set.
"""

from __future__ import annotations

import os

from gateway.app import asgi_app, create_app
from gateway.config import load_settings
from gateway.frontdoor import FrontDoor
from gateway.telemetry.logs import configure_logging
from gateway.telemetry.sentry import init_sentry

__all__ = ["LOG_LEVEL_ENV", "app"]

LOG_LEVEL_ENV = "RAILGATE_LOG_LEVEL"
"""The log level `railgate serve` hands its workers (not a config override: no such field)."""


def app() -> FrontDoor:
    settings = load_settings()
    level, fmt = os.environ.get(LOG_LEVEL_ENV, "info"), settings.telemetry.log_format
    configure_logging(level, fmt)
    init_sentry(os.environ)
    return asgi_app(create_app(settings, warm_rails=True))
