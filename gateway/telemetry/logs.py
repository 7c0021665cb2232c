"""Application and access logs: one line per record, written off the event loop.

`configure_logging()` gives the root logger one handler, a `QueueHandler` that only
appends the record to a bounded queue; a `QueueListener` thread formats it and writes it
to stderr. A full queue drops the record and counts it (`dropped_lines()`): logging never
blocks or fails a request. uvicorn's loggers propagate to the same handler when uvicorn is
given `log_config=None`.

A line is JSON (`JsonFormatter`: `ts`, `level`, `logger`, `message`, the record's
structured `fields` at the top level, `exc_type` and `traceback` for an exception) or
readable text (`TextFormatter`: the same, `key=value`). Structured fields are passed as
`log.info("access", extra={"fields": {...}})`; the dict must not change afterwards, since
it is formatted later on the writer thread. Tracebacks name each exception's type but not
its message, which could quote a prompt.
"""

from __future__ import annotations

import atexit
import copy
import logging
import queue
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from logging.handlers import QueueHandler, QueueListener
from types import TracebackType
from typing import Any, Literal

import orjson

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "configure_logging", "dropped_lines"]

LogFormat = Literal["json", "text"]

QUEUE_SIZE = 10_000
"""Records waiting for the writer thread; more are dropped (and counted)."""
BATCH_LINES = 256
"""Most lines the writer thread holds before writing them out."""


def _ts(record: logging.LogRecord) -> str:
    """ISO-8601 UTC with milliseconds, e.g. `2025-01-31T12:00:00.123Z`."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _type_name(kind: type[BaseException]) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _traceback(exc: BaseException, seen: set[int] | None = None) -> str:
    """Frames and type names of `exc` and the exceptions it chains, not their messages."""
    seen = set() if seen is None else seen
    seen.add(id(exc))
    head = ""
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        head = _traceback(exc.__cause__, seen) + (
            "\nThe above exception was the direct cause of the following exception:\n\n"
        )
    elif (
        exc.__context__ is not None
        and not exc.__suppress_context__
        and id(exc.__context__) not in seen
    ):
        head = _traceback(exc.__context__, seen) + (
            "\nDuring handling of the above exception, another exception occurred:\n\n"
        )
    frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    return f"{head}Traceback (most recent call last):\n{frames}{_type_name(type(exc))}"


_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exception(record: logging.LogRecord) -> _ExcInfo | None:
    info = record.exc_info
    if not info or info[0] is None or info[1] is None:
        return None
    return info


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields: Mapping[str, Any] | None = getattr(record, "fields", None)
        if fields:
            for name, value in fields.items():
                out.setdefault(name, value)
        info = _exception(record)
        if info is not None:
            out["exc_type"] = _type_name(info[0])
            out["traceback"] = _traceback(info[1])
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        plain = value and not any(c.isspace() or c in '"=' for c in value)
        return value if plain else orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger> <message> key=value …`, then the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record)} {record.levelname} {record.name} {record.getMessage()}"
        fields: Mapping[str, Any] | None = getattr(record, "fields", None)
        if fields:
            pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
            line = f"{line} {pairs}"
        info = _exception(record)
        if info is not None:
            line = f"{line}\n{_traceback(info[1])}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class _Process:
    """This process's logging: the installed handler, and the records dropped so far."""

    handler: _Handler | None = None
    dropped = 0


def dropped_lines() -> int:
    """Log records dropped so far because the writer thread fell behind."""
    return _Process.dropped


_Records = queue.Queue[logging.LogRecord | None]


class _Listener(QueueListener):
    def __init__(self, records: _Records, output: logging.Handler) -> None:
        super().__init__(records, output)
        self._records = records

    def enqueue_sentinel(self) -> None:
        # The base class's put_nowait fails on a full queue; this thread drains it, so
        # waiting ends. `None` is the base class's sentinel.
        self._records.put(None)


class _Batched(logging.StreamHandler):  # type: ignore[type-arg]
    """The writer thread's output: formatted lines are written in one piece once the
    queue is empty (or `BATCH_LINES` are pending), not one write per line."""

    def __init__(self, records: _Records) -> None:
        super().__init__(sys.stderr)
        self._records = records
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if len(self._pending) >= BATCH_LINES or self._records.empty():
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                lines, self._pending = self._pending, []
                self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()


class _Handler(QueueHandler):
    """Hands records to the writer thread; never blocks, drops (counted) when full."""

    def __init__(self, size: int, formatter: logging.Formatter) -> None:
        records: _Records = queue.Queue(size)
        super().__init__(records)
        self.output = _Batched(records)
        self.output.setFormatter(formatter)
        self.writer = _Listener(records, self.output)
        self.writer.start()
        self._stopped = False

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # A message with arguments is built now (they may change later), on a copy that
        # other handlers (Sentry's) do not see; the rest of the formatting, the traceback
        # included, happens on the writer thread.
        if record.args or not isinstance(record.msg, str):
            record = copy.copy(record)
            record.msg = record.getMessage()
            record.args = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            _Process.dropped += 1  # under the handler's lock

    def close(self) -> None:
        """Write what is queued, stop the writer thread and leave the root logger."""
        if not self._stopped:
            self._stopped = True
            atexit.unregister(self.close)
            logging.getLogger().removeHandler(self)
            if _Process.handler is self:
                _Process.handler = None
            self.writer.stop()
            self.output.flush()
        super().close()


def configure_logging(
    level: str, fmt: LogFormat = "json", *, queue_size: int = QUEUE_SIZE
) -> Callable[[], None]:
    """Send every log record (uvicorn's too) through one queued stderr writer.

    The root logger ends up with exactly this handler: others are removed (a library's
    `dictConfig` may have replaced it; calling again puts it back). `level` (`debug`,
    `info`, …) applies to the root logger and `railgate*` loggers. Idempotent: a second
    call keeps the writer thread and changes only the level and the format.

    Returns:
        A function that writes what is queued and stops the writer thread; it is also
        registered with `atexit`.
    """
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = _Process.handler
    if handler is None:
        handler = _Process.handler = _Handler(queue_size, formatter)
        atexit.register(handler.close)
    else:
        handler.output.setFormatter(formatter)
    root = logging.getLogger()
    for other in [h for h in root.handlers if h is not handler]:
        root.removeHandler(other)
    if handler not in root.handlers:
        root.addHandler(handler)
    for logger in (root, logging.getLogger("railgate")):
        logger.setLevel(level.upper())
    logging.captureWarnings(True)  # `warnings` become log records, not raw stderr text
    # Record attributes no line shows: not computing them saves a few µs per record on
    # the event loop (the caller's frame walk most of all).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    return handler.close
