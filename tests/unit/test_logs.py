"""JSON and text log lines, the queued writer, and the access log's lines (no network)."""

from __future__ import annotations

import io
import logging
import logging.config
import re
import sys
import threading
import time
from collections.abc import Iterator

import orjson
import pytest

from gateway.call import Call
from gateway.config import ModelRoute, ProviderConfig
from gateway.providers.mock import MockProvider
from gateway.providers.registry import Route
from gateway.schemas import parse_request
from gateway.store import ApiKey, Tenant
from gateway.telemetry.access_log import AccessLog
from gateway.telemetry.logs import JsonFormatter, TextFormatter, configure_logging, dropped_lines
from gateway.telemetry.observer import Exchange
from gateway.telemetry.tracecontext import trace_context
from gateway.tenancy import Caller
from gateway.usage import UsageRecord

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EMAIL = "ada.lovelace@example.com"
TRACE = "0af7651916cd43dd8448eb211c80319c"


def make_record(
    msg: str = "hello %s",
    args: tuple[object, ...] = ("world",),
    fields: dict[str, object] | None = None,
    exc_info: object = None,
) -> logging.LogRecord:
    record = logging.getLogger("railgate.test").makeRecord(
        "railgate.test",
        logging.WARNING,
        __file__,
        1,
        msg,
        args,
        exc_info,  # type: ignore[arg-type]
    )
    if fields is not None:
        record.fields = fields
    return record


def raise_chained() -> None:
    try:
        {}[EMAIL]
    except KeyError as exc:
        raise ValueError(f"cannot mail {EMAIL}") from exc


def test_json_line_has_the_fields():
    line = JsonFormatter().format(make_record(fields={"request_id": "r1", "status": 200}))
    assert "\n" not in line
    out = orjson.loads(line)
    assert TS.match(out.pop("ts"))
    assert out == {
        "level": "WARNING",
        "logger": "railgate.test",
        "message": "hello world",
        "request_id": "r1",
        "status": 200,
    }


def test_fields_cannot_replace_the_base_keys():
    out = orjson.loads(JsonFormatter().format(make_record(fields={"level": "x", "n": 1})))
    assert out["level"] == "WARNING" and out["n"] == 1


def test_exception_has_type_and_traceback_without_its_message():
    try:
        raise_chained()
    except ValueError:
        record = make_record("lookup failed", (), exc_info=sys.exc_info())
    out = orjson.loads(JsonFormatter().format(record))
    assert out["exc_type"] == "ValueError"
    trace = out["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "KeyError" in trace and "direct cause" in trace
    assert "in raise_chained" in trace and trace.endswith("\nValueError")
    assert EMAIL not in orjson.dumps(out).decode()  # neither exception's message


def test_text_line_reads_as_key_value():
    fields = {"request_id": "r1", "path": "/v1/chat/completions", "status": 200}
    fields |= {"error": None, "stream": True, "note": "two words", "guard_actions": {"pii.r": 2}}
    line = TextFormatter().format(make_record("access", (), fields=fields))
    ts, rest = line.split(" ", 1)
    assert TS.match(ts)
    assert rest == (
        "WARNING railgate.test access request_id=r1 path=/v1/chat/completions status=200"
        ' stream=true note="two words" guard_actions={"pii.r":2}'
    )


def test_text_line_with_an_exception():
    try:
        raise_chained()
    except ValueError:
        line = TextFormatter().format(make_record("failed", (), exc_info=sys.exc_info()))
    first, *rest = line.splitlines()
    assert first.endswith("WARNING railgate.test failed")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError"
    assert EMAIL not in line


# -- the queued writer ----------------------------------------------------------------


class BlockingStream(io.StringIO):
    """stderr that holds the writer thread in `write` until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        assert self.release.wait(10), "never released"
        return super().write(text)


@pytest.fixture
def root_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Restore the root logger (and `railgate`'s level) after `configure_logging`."""
    root, railgate = logging.getLogger(), logging.getLogger("railgate")
    saved = (root.handlers[:], root.level, railgate.level)
    stops: list[object] = []
    yield stops
    for stop in stops:
        stop()  # type: ignore[operator]
    root.handlers[:], _, _ = saved
    root.setLevel(saved[1])
    railgate.setLevel(saved[2])
    logging.captureWarnings(False)


def test_configure_logging_writes_json_lines_to_stderr(root_logging, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    root_logging.append(stop := configure_logging("info", "json"))
    logging.getLogger("railgate.x").info("one %d", 1)
    logging.getLogger("railgate.x").debug("not at info")
    logging.getLogger("rails.x").info("a library line")
    try:
        raise_chained()
    except ValueError:
        logging.getLogger("railgate.x").exception("failed")
    stop()
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [
        ("railgate.x", "one 1"),
        ("rails.x", "a library line"),
        ("railgate.x", "failed"),
    ]
    assert lines[-1]["exc_type"] == "ValueError" and "in raise_chained" in lines[-1]["traceback"]
    assert EMAIL not in out.getvalue()


def test_a_full_queue_drops_and_counts_without_blocking(root_logging, monkeypatch):
    stream = BlockingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    root_logging.append(stop := configure_logging("info", "json", queue_size=2))
    log = logging.getLogger("railgate.flood")
    try:
        log.info("first")  # taken by the writer thread, which then blocks writing it
        assert stream.entered.wait(5)
        before = dropped_lines()
        flood = threading.Thread(target=lambda: [log.info("n %d", i) for i in range(1000)])
        started = time.perf_counter()
        flood.start()
        flood.join(5)
        assert not flood.is_alive(), "logging blocked on a full queue"
        assert time.perf_counter() - started < 2
        assert dropped_lines() - before == 998  # two fit in the queue
    finally:
        stream.release.set()
    stop()
    messages = [orjson.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == ["first", "n 0", "n 1"]


def test_configure_logging_is_idempotent(root_logging, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    root_logging.append(configure_logging("info", "json"))
    threads = threading.active_count()
    # a library replaces the root handlers (as Litestar's default logging config does)
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"h": {"class": "logging.NullHandler"}},
            "root": {"handlers": ["h"]},
        }
    )
    root_logging.append(stop := configure_logging("warning", "text"))
    root_logging.append(configure_logging("warning", "text"))
    assert threading.active_count() == threads  # still one writer thread
    assert [type(h).__name__ for h in logging.getLogger().handlers] == ["_Handler"]
    assert logging.getLogger("railgate").level == logging.WARNING
    logging.getLogger("railgate.x").info("dropped by level")
    logging.getLogger("railgate.x").warning("kept")
    stop()
    assert out.getvalue().splitlines()[-1].endswith("WARNING railgate.x kept")
    assert "dropped by level" not in out.getvalue()


# -- the access log ----------------------------------------------------------------------


def make_call() -> Call:
    body = b'{"model":"gpt-test","messages":[{"role":"user","content":"secret prompt"}]}'
    return Call(
        request_id="req-1",
        caller=Caller(Tenant(id="acme"), ApiKey(id="key_1", tenant_id="acme", key_sha256="0" * 64)),
        route=Route(
            ModelRoute(name="gpt-test", provider="mock"),
            MockProvider(ProviderConfig(name="mock", type="mock")),
        ),
        request=parse_request("chat/completions", body),
        trace=trace_context({"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}),
        user=EMAIL,
        client_ip="10.1.2.3",
    )


def make_usage(**overrides: object) -> UsageRecord:
    fields: dict[str, object] = dict(
        request_id="req-1", tenant_id="acme", key_id="key_1", model="gpt-test",
        provider="mock", endpoint="chat/completions", stream=True, status=200, error=None,
        user=EMAIL, prompt_tokens=1000, completion_tokens=200, cost_micro_usd=4500,
        latency_ms=250.123, ttft_ms=215.456, timestamp=1.0, rails_cost_micro_usd=500,
        trace_id=TRACE, cached_tokens=600, reasoning_tokens=150, upstream_ms=200.0,
        overhead_ms=50.123, guard_actions={"pii.redacted": 2},
    )  # fmt: skip
    fields.update(overrides)
    return UsageRecord(**fields)  # type: ignore[arg-type]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        orjson.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "railgate.access"
    ]


def test_access_line_of_a_call(caplog):
    caplog.set_level(logging.INFO, "railgate.access")
    call, record = make_call(), make_usage()
    AccessLog().finished(call, record)
    (line,) = access_lines(caplog)
    del line["ts"]
    assert line == {
        "level": "INFO", "logger": "railgate.access", "message": "access",
        "request_id": "req-1", "trace_id": TRACE, "span_id": call.trace.span_id,
        "tenant_id": "acme", "key_id": "key_1", "client_ip": "10.1.2.3", "method": "POST",
        "path": "/v1/chat/completions", "model": "gpt-test", "provider": "mock",
        "stream": True, "status": 200, "error": None, "prompt_tokens": 1000,
        "completion_tokens": 200, "cached_tokens": 600, "reasoning_tokens": 150,
        "cost_usd": 0.005, "estimated": False, "duration_ms": 250.12, "upstream_ms": 200.0,
        "ttft_ms": 215.46, "overhead_ms": 50.12, "blocked": False,
        "guard_actions": {"pii.redacted": 2},
    }  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{16}", str(line["span_id"]))
    assert EMAIL not in orjson.dumps(line).decode()  # the end user is never logged
    assert "secret prompt" not in orjson.dumps(line).decode()


def test_access_line_fields_are_not_shared_with_the_record(caplog):
    caplog.set_level(logging.INFO, "railgate.access")
    record = make_usage()
    AccessLog().finished(make_call(), record)
    assert record.guard_actions is not None
    record.guard_actions["pii.redacted"] = 99  # written later, on the writer thread
    assert access_lines(caplog)[0]["guard_actions"] == {"pii.redacted": 2}


def test_access_line_of_an_exchange_and_as_text(caplog):
    caplog.set_level(logging.INFO, "railgate.access")
    AccessLog().exchanged(
        Exchange("req-2", "POST", "/v1/chat/completions", 401, 0.456, "10.1.2.3",
                 "invalid_api_key", TRACE)
    )  # fmt: skip
    (line,) = access_lines(caplog)
    assert {k: v for k, v in line.items() if k not in ("ts", "level", "logger")} == {
        "message": "access", "request_id": "req-2", "trace_id": TRACE,
        "client_ip": "10.1.2.3", "method": "POST", "path": "/v1/chat/completions",
        "status": 401, "error": "invalid_api_key", "duration_ms": 0.46,
    }  # fmt: skip
    text = TextFormatter().format(caplog.records[-1])
    assert text.split(" ", 1)[1] == (
        f"INFO railgate.access access request_id=req-2 trace_id={TRACE} client_ip=10.1.2.3"
        " method=POST path=/v1/chat/completions status=401 error=invalid_api_key"
        " duration_ms=0.46"
    )


def test_no_access_line_below_info(caplog):
    caplog.set_level(logging.WARNING, "railgate.access")
    AccessLog().finished(make_call(), make_usage())
    AccessLog().exchanged(Exchange("req-3", "GET", "/healthz", 200, 0.1))
    assert access_lines(caplog) == []


def test_dropped_log_lines_are_telemetry_drops_in_metrics(monkeypatch):
    from litestar.testing import TestClient

    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.telemetry import logs

    monkeypatch.setattr(logs._Process, "dropped", 7)
    with TestClient(create_app(load_settings(env={}))) as client:
        line = 'railgate_telemetry_dropped_total{exporter="logs"} 7'
        assert line in client.get("/metrics").text
        monkeypatch.setattr(logs._Process, "dropped", 9)
        assert 'railgate_telemetry_dropped_total{exporter="logs"} 9' in client.get("/metrics").text
