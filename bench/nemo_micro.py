"""Latency a NeMo input rail adds to a call, measured in-process (no gateway, no network).

    python bench/nemo_micro.py [--n 300] [--config jailbreak-heuristics] [--profile]

Runs `GuardPipeline.run("input", ...)` with one `nemo` guard on a short chat prompt,
N times, and prints p50/p95 per check; `--profile` adds a cProfile summary of where a
check spends its time. The configs measured by default need no model (no-LLM rails),
so the numbers are NeMo's own overhead plus the rail's action.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time

from rails.base import GuardContext
from rails.nemo.engine import NemoEngine
from rails.nemo.guard import NemoGuard
from rails.nemo.options import NemoOptions
from rails.pipeline import GuardPipeline, GuardSlot

PROMPTS = [
    "Hello, can you help me reset the password on my account?",
    "Summarise the attached invoice and list what we were charged for.",
    "What are your support hours on weekends?",
]


async def measure(config: str, n: int) -> list[float]:
    guard = NemoGuard(NemoEngine(), NemoOptions(config=config, params={"terms": ["falcon"]}))
    pipeline = GuardPipeline([GuardSlot(guard, timeout_s=None)])
    times = []
    for i in range(n):
        ctx = GuardContext("bench", str(i), "m", b"k" * 32)
        texts = ["You are a helpful assistant.", PROMPTS[i % len(PROMPTS)]]
        started = time.perf_counter()
        await pipeline.run("input", texts, ctx, ["system", "user"])
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--config", action="append")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for config in args.config or ["jailbreak-heuristics", "blocklist"]:
        asyncio.run(measure(config, 20))  # warm-up (first check compiles NeMo's flows)
        times = asyncio.run(measure(config, args.n))
        q = statistics.quantiles(times, n=20)
        print(f"{config:22s} p50 {statistics.median(times):6.2f} ms  p95 {q[18]:6.2f} ms")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(measure(config, 100))
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
