"""Optional error reporting to Sentry when `SENTRY_DSN` is set (`railgate[sentry]`).

Only ERROR (and worse) log records become events; nothing else is sent: no breadcrumbs,
no performance data, no sessions, no request data. Every event passes `scrub()`, which
keeps an allowlist of fields: ids, level, logger, release, environment, host, the log
message, the `runtime` and `os` contexts, and each exception's type and stack frames
(file, function, line) with its message replaced by its type name, since a message can
quote a prompt. Local variables, source lines, `extra`, other contexts, user and request
data are dropped. If scrubbing fails, Sentry drops the event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from gateway import __version__

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

__all__ = ["init_sentry", "scrub"]

log = logging.getLogger("railgate")

_EVENT_KEYS = frozenset(
    {"event_id", "timestamp", "level", "logger", "platform", "release", "environment"}
    | {"server_name", "sdk", "fingerprint", "message"}
)
_CONTEXTS = frozenset({"runtime", "os"})
_LOGENTRY_KEYS = frozenset({"message", "formatted"})
_EXCEPTION_KEYS = frozenset({"type", "module", "mechanism"})
_MECHANISM_KEYS = frozenset(
    {"type", "handled", "source", "exception_id", "parent_id", "is_exception_group"}
)
_FRAME_KEYS = frozenset({"filename", "abs_path", "module", "function", "lineno", "colno", "in_app"})
_THREAD_KEYS = frozenset({"id", "name", "crashed", "current"})


def init_sentry(env: Mapping[str, str]) -> bool:
    """Start reporting errors to `env["SENTRY_DSN"]`; False if unset or sentry-sdk is
    missing (then a warning says so). Call once per process, after logging is set up."""
    dsn = env.get("SENTRY_DSN")
    if not dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.atexit import AtexitIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration
    except ImportError:
        log.warning(
            "SENTRY_DSN is set but sentry-sdk is not installed: pip install railgate[sentry]"
        )
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=env.get("SENTRY_ENVIRONMENT"),
        release=f"railgate@{__version__}",
        # No `send_default_pii`: off by default, and deprecated (a warning) since 2.7x.
        include_local_variables=False,
        include_source_context=False,
        max_request_body_size="never",
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[
            LoggingIntegration(level=None, event_level=logging.ERROR, sentry_logs_level=None),
            AtexitIntegration(callback=_quiet),  # send what is pending at exit, silently
        ],
        traces_sample_rate=None,
        auto_session_tracking=False,
        before_send=scrub,
    )
    return True


def _quiet(pending: int, timeout: float) -> None:
    """Sentry's default prints to stderr at exit, which would break the JSON log."""


def scrub(event: Event, hint: Hint) -> Event:
    """The event without anything that could carry content (see the module docstring)."""
    raw = cast("dict[str, Any]", event)
    out = {k: v for k, v in raw.items() if k in _EVENT_KEYS}
    if isinstance(logentry := raw.get("logentry"), dict):
        out["logentry"] = _pick(logentry, _LOGENTRY_KEYS)
    if isinstance(contexts := raw.get("contexts"), dict):
        out["contexts"] = {k: v for k, v in contexts.items() if k in _CONTEXTS}
    if isinstance(exception := raw.get("exception"), dict):
        out["exception"] = {"values": [_exception(e) for e in exception.get("values") or ()]}
    if isinstance(threads := raw.get("threads"), dict):
        out["threads"] = {"values": [_thread(t) for t in threads.get("values") or ()]}
    if isinstance(stacktrace := raw.get("stacktrace"), dict):
        out["stacktrace"] = _stacktrace(stacktrace)
    return cast("Event", out)


def _pick(source: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in source.items() if k in keys}


def _exception(exc: dict[str, Any]) -> dict[str, Any]:
    out = _pick(exc, _EXCEPTION_KEYS)
    out["value"] = exc.get("type", "")
    if isinstance(mechanism := exc.get("mechanism"), dict):
        out["mechanism"] = _pick(mechanism, _MECHANISM_KEYS)
    if isinstance(stacktrace := exc.get("stacktrace"), dict):
        out["stacktrace"] = _stacktrace(stacktrace)
    return out


def _thread(thread: dict[str, Any]) -> dict[str, Any]:
    out = _pick(thread, _THREAD_KEYS)
    if isinstance(stacktrace := thread.get("stacktrace"), dict):
        out["stacktrace"] = _stacktrace(stacktrace)
    return out


def _stacktrace(stacktrace: dict[str, Any]) -> dict[str, Any]:
    frames = stacktrace.get("frames") or ()
    return {"frames": [_pick(f, _FRAME_KEYS) for f in frames if isinstance(f, dict)]}
