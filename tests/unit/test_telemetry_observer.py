"""`Telemetry`: finished calls reach the observers in batches, in order, exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.telemetry.observer import BATCH_S, MAX_BATCH, Exchange, Telemetry


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, Any]], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def finished(self, call: Any, record: Any) -> None:
        self.log.append((self.name, call))
        if self.fail:
            raise RuntimeError("broken observer")

    def exchanged(self, exchange: Exchange) -> None:
        self.log.append((self.name, exchange.request_id))


def test_outside_an_event_loop_calls_are_handed_over_at_once() -> None:
    log: list[tuple[str, Any]] = []
    telemetry = Telemetry([Recorder("a", log)])
    telemetry.finished("call-1", "record-1")  # type: ignore[arg-type]
    assert log == [("a", "call-1")]


async def test_calls_wait_for_company_then_each_observer_takes_the_batch() -> None:
    log: list[tuple[str, Any]] = []
    telemetry = Telemetry([Recorder("a", log), Recorder("b", log)])
    for n in range(3):
        telemetry.finished(f"call-{n}", f"record-{n}")  # type: ignore[arg-type]
    assert log == []  # nothing yet: the batch waits up to BATCH_S
    await asyncio.sleep(BATCH_S * 4)
    calls = [f"call-{n}" for n in range(3)]
    assert log == [("a", c) for c in calls] + [("b", c) for c in calls]
    await asyncio.sleep(BATCH_S * 2)
    assert len(log) == 6  # exactly once


async def test_a_full_batch_is_handed_over_without_waiting() -> None:
    log: list[tuple[str, Any]] = []
    telemetry = Telemetry([Recorder("a", log)])
    for n in range(MAX_BATCH):
        telemetry.finished(n, n)  # type: ignore[arg-type]
    assert [call for _, call in log] == list(range(MAX_BATCH))
    telemetry.finished("next", "next")  # type: ignore[arg-type]
    assert len(log) == MAX_BATCH  # a new batch started
    await asyncio.sleep(BATCH_S * 4)
    assert log[-1] == ("a", "next") and len(log) == MAX_BATCH + 1


async def test_flush_hands_over_what_waits_once_and_cancels_the_timer() -> None:
    log: list[tuple[str, Any]] = []
    telemetry = Telemetry([Recorder("a", log)])
    telemetry.finished("call", "record")  # type: ignore[arg-type]
    telemetry.flush()  # shutdown: before the exporters close
    assert log == [("a", "call")]
    await asyncio.sleep(BATCH_S * 4)
    assert log == [("a", "call")]


async def test_a_failing_observer_costs_the_others_nothing_and_is_counted() -> None:
    log: list[tuple[str, Any]] = []
    telemetry = Telemetry([Recorder("broken", log, fail=True), Recorder("b", log)])
    telemetry.finished("c1", "r1")  # type: ignore[arg-type]
    telemetry.finished("c2", "r2")  # type: ignore[arg-type]
    telemetry.flush()
    assert log == [("broken", "c1"), ("broken", "c2"), ("b", "c1"), ("b", "c2")]
    assert telemetry.failures == 2


def test_exchanges_are_handed_over_at_once() -> None:
    log: list[tuple[str, Any]] = []
    telemetry = Telemetry([Recorder("a", log)])
    telemetry.exchanged(Exchange("req-1", "POST", "/v1/chat/completions", 401, 1.0))
    assert log == [("a", "req-1")]
