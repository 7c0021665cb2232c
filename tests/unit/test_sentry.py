"""Sentry reporting against a real HTTP server on loopback: what leaves the process."""

from __future__ import annotations

import gzip
import logging
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import sentry_sdk

from gateway import __version__
from gateway.telemetry.sentry import init_sentry
from tests.servers import ServerThread, handle_lifespan, read_body, send_json

EMAIL = "ada.lovelace@example.com"
PHONE = "+234 803 123 4567"


@dataclass
class Envelope:
    path: str
    headers: dict[str, str]
    body: bytes
    """Decompressed."""

    def items(self) -> list[tuple[dict[str, Any], bytes]]:
        """(item header, payload) pairs after the envelope header."""
        _, _, rest = self.body.partition(b"\n")
        out = []
        while rest.strip():
            line, _, rest = rest.partition(b"\n")
            header = orjson.loads(line)
            if "length" in header:
                payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
            else:
                payload, _, rest = rest.partition(b"\n")
            out.append((header, payload))
        return out


@dataclass
class FakeSentry:
    """Accepts envelopes (`POST /api/<project>/envelope/`) and keeps them decompressed."""

    envelopes: list[Envelope] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if await handle_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        encoding = headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # only if sentry-sdk found it installed

            body = brotli.decompress(body)
        else:
            assert encoding in ("", "identity"), encoding
        self.envelopes.append(Envelope(scope["path"], headers, body))
        self.arrived.set()
        await send_json(send, 200, b"{}")


@pytest.fixture
def no_sentry_client() -> Iterator[None]:
    """Whatever a test starts, no Sentry client is left behind."""
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    assert not sentry_sdk.get_client().is_active()


@pytest.fixture
def fake_sentry(no_sentry_client, monkeypatch) -> Iterator[tuple[FakeSentry, str]]:
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    fake = FakeSentry()
    with ServerThread(fake) as server:
        yield fake, f"http://public@127.0.0.1:{server.port}/1"


def lookup_customer(record: dict[str, str]) -> None:
    email, phone = record["email"], record["phone"]  # locals Sentry could capture
    raise LookupError(f"no customer with e-mail {email} or phone {phone}")


def test_error_reaches_sentry_without_personal_data(fake_sentry):
    fake, dsn = fake_sentry
    assert init_sentry({"SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "test-env"})
    log = logging.getLogger("railgate.sentry-test")
    with sentry_sdk.isolation_scope() as scope:
        scope.set_user({"email": EMAIL, "ip_address": "10.9.8.7"})
        scope.set_extra("phone", PHONE)
        scope.set_tag("customer", EMAIL)
        scope.set_context("customer", {"email": EMAIL})
        sentry_sdk.add_breadcrumb(message=f"looked up {EMAIL}")
        try:
            lookup_customer({"email": EMAIL, "phone": PHONE})
        except LookupError as exc:
            log.exception("customer lookup failed (%s)", type(exc).__name__)
    sentry_sdk.flush(timeout=5)
    assert fake.arrived.wait(5), "no envelope arrived"

    (envelope,) = fake.envelopes
    assert envelope.path == "/api/1/envelope/"
    body = envelope.body.decode()
    for secret in (EMAIL, PHONE, "803 123", "10.9.8.7"):
        assert secret not in body
    (event,) = [orjson.loads(p) for h, p in envelope.items() if h["type"] == "event"]
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "LookupError" and exception["value"] == "LookupError"
    frames = exception["stacktrace"]["frames"]
    assert [f["function"] for f in frames[-2:]] == [
        "test_error_reaches_sentry_without_personal_data",
        "lookup_customer",
    ]
    assert all(f["lineno"] > 0 and f["filename"].endswith("test_sentry.py") for f in frames[-2:])
    assert not any({"vars", "context_line", "pre_context", "post_context"} & set(f) for f in frames)
    assert event["logger"] == "railgate.sentry-test" and event["level"] == "error"
    assert event["logentry"]["formatted"] == "customer lookup failed (LookupError)"
    assert event["release"] == f"railgate@{__version__}"
    assert event["environment"] == "test-env"
    assert set(event.get("contexts", {})) <= {"runtime", "os"}
    for dropped in ("user", "extra", "tags", "breadcrumbs", "request"):
        assert dropped not in event


def test_no_dsn_no_sentry(no_sentry_client):
    assert init_sentry({}) is False
    assert init_sentry({"SENTRY_DSN": ""}) is False
    assert not sentry_sdk.get_client().is_active()


def test_dsn_without_sentry_sdk_warns(no_sentry_client, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # `import sentry_sdk` fails
    assert init_sentry({"SENTRY_DSN": "http://public@127.0.0.1:9/1"}) is False
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "railgate[sentry]" in warning.getMessage()
    assert not sentry_sdk.get_client().is_active()
