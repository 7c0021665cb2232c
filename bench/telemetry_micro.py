"""Micro-benchmark of the per-call telemetry CPU: OpenTelemetry spans and the Langfuse
generation of one finished chat call (no gateway, no network).

    python bench/telemetry_micro.py [--n 2000] [--repeats 15]
    python bench/telemetry_micro.py --against /tmp/railgate_before [--rounds 10 --repeats 3]

Builds `n` realistic finished calls (a ~1 KB chat prompt of two messages with
`temperature` and `max_tokens`, usage with cached tokens, a finish reason, every timing,
a PII guard's time and finding, the upstream's reply for Langfuse content, three tenants,
two models, 2,000 calls a second) and their `UsageRecord`s, then times per call:

    spans             SpanFactory.call_spans + encode_span of each span
    generation        langfuse.generation + encode_span
    Tracing.finished  the observer, into a BatchExporter that is never started
    Langfuse.finished the observer, the same way
    both              both observers in turn, as the gateway runs them per call

and prints the median and the minimum CPU µs per call over the passes (`repeats` passes
over the `n` calls, queues emptied between passes, untimed). GC runs as in the app
(`gc.freeze()`, `GC_THRESHOLDS`): with the default thresholds the numbers would be
dominated by collections over the retained objects.

`--against DIR` compares with another source tree (a copy of `gateway/` and `rails/`
taken before a change): each round runs this script once on each tree, alternating, in
fresh interpreters, and the table pools the passes of all rounds. The machine is shared
and noisy: compare within one run, and prefer the minimum (other work only ever adds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LANGFUSE_ENV = {"LF_PUBLIC": "pk-lf-bench", "LF_SECRET": "sk-lf-bench"}
PARTS = ("spans", "generation", "Tracing.finished", "Langfuse.finished", "both")

SYSTEM = "You are a helpful assistant for an online bookshop. Answer briefly and politely. " * 2
QUESTION = (
    "I ordered three paperbacks last Tuesday and the tracking page still says that the "
    "parcel is being prepared. Could you tell me what usually causes a delay like this, "
    "how long it normally takes, and whether I can change the delivery address now? "
) * 3
REPLY = (
    b'{"id":"chatcmpl-abc123","object":"chat.completion","created":1700000000,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Orders are usually prepared within two working days; a delay often means '
    b'one title is restocked. You can change the address until the parcel ships."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":231,"completion_tokens":34,'
    b'"total_tokens":265,"prompt_tokens_details":{"cached_tokens":128},'
    b'"completion_tokens_details":{"reasoning_tokens":0}}}'
)


# Imports of the gateway are inside the functions: with `--against`, the driver loads
# neither tree, each worker loads its own (PYTHONPATH).


def _settings() -> Any:
    from gateway.config import parse_settings

    raw = {
        "providers": [
            {"name": "openai", "type": "openai", "base_url": "https://api.openai.com/v1"},
            {"name": "azure", "type": "openai", "base_url": "https://example.openai.azure.com"},
        ],
        "models": [
            {
                "name": "gpt-4o-mini",
                "provider": "openai",
                "upstream_model": "gpt-4o-mini-2024-07-18",
                "input_price_per_mtok": 0.15,
                "output_price_per_mtok": 0.6,
            },
            {
                "name": "gpt-4o",
                "provider": "azure",
                "input_price_per_mtok": 2.5,
                "output_price_per_mtok": 10.0,
            },
        ],
        "telemetry": {
            "langfuse": {
                "host": "http://127.0.0.1:9",
                "public_key_env": "LF_PUBLIC",
                "secret_key_env": "LF_SECRET",
            },
            "export": {"queue_spans": 10**7, "batch_spans": 10_000},
        },
    }
    return parse_settings(raw, LANGFUSE_ENV)


def _calls(settings: Any, n: int) -> list[tuple[Any, Any]]:
    """`n` finished calls and their records, each with its own ids and numbers."""
    import orjson

    from gateway.call import Call
    from gateway.providers.mock import MockProvider
    from gateway.providers.registry import Route
    from gateway.schemas import parse_request, reply_decoder
    from gateway.store import ApiKey, Tenant
    from gateway.telemetry.tracecontext import trace_context
    from gateway.tenancy import Caller
    from gateway.usage import record_for
    from rails.base import Finding
    from rails.testing import make_ctx

    providers = {p.name: MockProvider(p) for p in settings.providers}
    routes = [Route(m, providers[m.provider]) for m in settings.models]
    tenants = [Tenant(id=f"tenant-{i}") for i in range(3)]
    out = []
    for i in range(n):
        tenant, route = tenants[i % 3], routes[i % 2]
        body = {
            "model": route.model.name,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": QUESTION + f" (order {i})"},
            ],
            "temperature": 0.7,
            "max_tokens": 256,
        }
        parent = f"00-{i + 1:032x}-{i + 7:016x}-01" if i % 2 else ""
        call = Call(
            request_id=f"req-{i:08d}",
            caller=Caller(tenant, ApiKey(id=f"key_{i % 5}", tenant_id=tenant.id, key_sha256="0")),
            route=route,
            request=parse_request("chat/completions", orjson.dumps(body)),
            trace=trace_context({"traceparent": parent}),
            user=f"user-{i % 17}",
            session_id=f"session-{i % 11}",
        )
        call.started = 1000.0 + i / 2000  # 2,000 calls a second, as measured in the gateway
        call.wall_ns = 1_700_000_000_000_000_000 + i * 500_003
        call.authed, call.admitted = call.started + 0.000_21, call.started + 0.000_35
        call.input_done = call.started + 0.001_9
        call.upstream_started = call.started + 0.002_1
        call.first_byte = call.started + 0.412_345_6
        call.upstream_ended = call.started + 0.498_765_4
        call.ended = call.started + 0.500_123_4
        reply = reply_decoder.decode(REPLY)
        call.usage, call.response_model = reply.usage, reply.model
        call.finish_reasons = [c.finish_reason for c in reply.choices if c.finish_reason]
        call.keep_output, call.upstream_reply = True, REPLY
        ctx = make_ctx(tenant_id=tenant.id, request_id=call.request_id, model=route.model.name)
        ctx.timings_ms["pii"] = 1.234 + i % 7 / 100
        ctx.findings.append(Finding("pii", "PERSON", 3, 9, 0.85, "redacted"))
        call.guards = ctx
        out.append((call, record_for(call)))
    return out


def _parts(settings: Any) -> tuple[dict[str, Callable[[Any, Any], object]], Callable[[], None]]:
    """The timed parts, and what empties the exporters' queues between passes."""
    from gateway.metrics import Counters
    from gateway.telemetry.exporter import BatchExporter
    from gateway.telemetry.langfuse import generation, langfuse_traces
    from gateway.telemetry.observer import Telemetry
    from gateway.telemetry.otlp import encode_span, otlp_config
    from gateway.telemetry.spans import SpanFactory
    from gateway.telemetry.tracing import Tracing

    factory = SpanFactory(settings)
    counters = Counters()
    otlp = BatchExporter(
        "otlp",
        "http://127.0.0.1:9/v1/traces",
        settings.telemetry.export,
        counters,
        {"service.name": "railgate", "service.version": "0.1.0"},
    )
    tracing = Tracing(factory, [otlp], otlp_config({}).sampler)  # parentbased_always_on
    langfuse = langfuse_traces(settings, counters, LANGFUSE_ENV)

    def spans(call: Any, record: Any) -> object:
        return [encode_span(s) for s in factory.call_spans(call, record)]

    def one_generation(call: Any, record: Any) -> object:
        return encode_span(generation(call, record, True))

    def drain() -> None:  # as if sent: the writer task is never started here
        for exporter in (otlp, *langfuse.exporters):  # Langfuse's open on first use
            exporter._queue.clear()

    parts: dict[str, Callable[[Any, Any], object]] = {
        "spans": spans,
        "generation": one_generation,
        "Tracing.finished": tracing.finished,
        "Langfuse.finished": langfuse.finished,
        "both": Telemetry([tracing, langfuse]).finished,
    }
    return parts, drain


def measure(n: int, repeats: int) -> dict[str, list[float]]:
    """CPU µs per call of each part, one value per pass."""
    settings = _settings()
    calls = _calls(settings, n)
    parts, drain = _parts(settings)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # gateway.app.GC_THRESHOLDS
    results: dict[str, list[float]] = {name: [] for name in parts}
    for part in parts.values():  # warm up caches and the interpreter
        for call, record in calls[:200]:
            part(call, record)
    for _ in range(repeats):
        for name, part in parts.items():
            drain()
            started = time.process_time()
            for call, record in calls:
                part(call, record)
            results[name].append((time.process_time() - started) / n * 1e6)
    drain()
    return results


def _table(columns: dict[str, dict[str, list[float]]]) -> str:
    """Median and minimum per part: on a shared machine other work only ever adds CPU
    time (caches, frequency), so the minimum is the steadier of the two."""
    names = list(columns)
    head = f"{'µs per call':<24}" + "".join(f"{c:>14}" for c in names)
    lines = [head + (f"{'change':>10}" if len(names) == 2 else "")]
    for stat in (statistics.median, min):
        for part in PARTS:
            values = [stat(columns[c][part]) for c in names]
            row = f"{part + ' ' + stat.__name__:<24}" + "".join(f"{v:>14.2f}" for v in values)
            if len(values) == 2:
                row += f"{(values[1] / values[0] - 1) * 100:>+9.0f}%"
            lines.append(row)
    return "\n".join(lines)


def _worker(tree: Path, n: int, repeats: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, __file__, "--n", str(n), "--repeats", str(repeats), "--json"]
    done = subprocess.run(args, env=env, cwd=tree, check=True, capture_output=True, text=True)
    out: dict[str, list[float]] = json.loads(done.stdout)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="calls per pass")
    parser.add_argument("--repeats", type=int, default=15, help="passes (per round)")
    parser.add_argument("--against", type=Path, help="another tree holding gateway/ and rails/")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (--against)")
    parser.add_argument("--json", action="store_true", help="print raw per-pass values")
    args = parser.parse_args()
    if args.against is None:
        results = measure(args.n, args.repeats)
        if args.json:
            print(json.dumps(results))
        else:
            print(_table({"this tree": results}))
        return
    here = Path(__file__).resolve().parents[1]
    trees = {"against": args.against.resolve(), "this tree": here}
    columns: dict[str, dict[str, list[float]]] = {c: {p: [] for p in PARTS} for c in trees}
    for _ in range(args.rounds):
        for column, tree in trees.items():
            for part, values in _worker(tree, args.n, args.repeats).items():
                columns[column][part].extend(values)
    print(_table(columns))


if __name__ == "__main__":
    main()
