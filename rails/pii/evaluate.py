"""Precision, recall, false-positive rate and speed of the PII engine.

    python -m rails.pii.evaluate [--quick]

Runs the engine with default options over `rails.pii.corpus`: per-entity and overall
precision/recall on the labelled corpus (a prediction counts when it overlaps a
labelled span of the same entity), the share of clean texts with any finding, and
timings per 1 KB and 10 KB text (uncached, cached, Presidio's whole-text analyzer
for reference, and streaming in 4-character deltas). `tests/unit/rails/
test_pii_quality.py` runs `evaluate()` and fails below the recorded figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from rails.base import GuardContext
from rails.pii.corpus import Sample, clean_corpus, pii_corpus
from rails.pii.engine import PiiEngine
from rails.pii.options import PiiOptions
from rails.pii.stream import PiiStreamFilter

__all__ = ["Quality", "evaluate", "main", "timings"]


@dataclass
class Quality:
    tp: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    clean_texts: int = 0
    clean_flagged: int = 0
    clean_findings: Counter[str] = field(default_factory=Counter)

    def precision(self, entity: str | None = None) -> float:
        tp = self.tp[entity] if entity else sum(self.tp.values())
        fp = self.fp[entity] if entity else sum(self.fp.values())
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, entity: str | None = None) -> float:
        tp = self.tp[entity] if entity else sum(self.tp.values())
        fn = self.fn[entity] if entity else sum(self.fn.values())
        return tp / (tp + fn) if tp + fn else 1.0

    @property
    def fp_rate(self) -> float:
        """Share of clean texts with at least one finding."""
        return self.clean_flagged / self.clean_texts if self.clean_texts else 0.0


def evaluate(
    engine: PiiEngine,
    options: PiiOptions | None = None,
    *,
    pii: Sequence[Sample] | None = None,
    clean: Sequence[Sample] | None = None,
) -> Quality:
    """Score `engine` on the labelled and the clean corpus."""
    plan = engine.prepare(options or PiiOptions())
    quality = Quality()
    for sample in pii if pii is not None else pii_corpus():
        predicted = engine.analyze_plan(sample.text, plan, cache=False)
        unmatched = list(sample.labels)
        for span in predicted:
            hit = next(
                (
                    g
                    for g in unmatched
                    if g[0] == span.entity and span.start < g[2] and g[1] < span.end
                ),
                None,
            )
            if hit is None:
                quality.fp[span.entity] += 1
            else:
                quality.tp[span.entity] += 1
                unmatched.remove(hit)
        for entity, _, _ in unmatched:
            quality.fn[entity] += 1
    for sample in clean if clean is not None else clean_corpus():
        found = engine.analyze_plan(sample.text, plan, cache=False)
        quality.clean_texts += 1
        quality.clean_flagged += bool(found)
        quality.clean_findings.update(s.entity for s in found)
    return quality


def _texts(size: int, count: int) -> list[str]:
    """`count` texts of `size` characters mixing PII samples and clean samples."""
    pii, clean = (
        pii_corpus(n=count * size // 100, seed=3),
        clean_corpus(n=count * size // 150, seed=5),
    )
    texts: list[str] = []
    parts: list[str] = []
    i = 0
    while len(texts) < count:
        parts.append((pii if i % 3 else clean)[i % (len(pii) if i % 3 else len(clean))].text)
        i += 1
        if sum(len(p) + 1 for p in parts) >= size:
            texts.append(" ".join(parts)[:size])
            parts = []
    return texts


def _measure(run: Callable[[str], object], texts: Sequence[str]) -> tuple[float, float]:
    run(texts[0])
    elapsed = []
    for text in texts:
        start = time.perf_counter()
        run(text)
        elapsed.append((time.perf_counter() - start) * 1000)
    elapsed.sort()
    return statistics.median(elapsed), elapsed[int(len(elapsed) * 0.95) - 1]


def _drive(steps: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (the PII stream filter only computes) to its
    end without an event loop, whose overhead (~0.1 ms a run) would distort the figure."""
    try:
        steps.send(None)
    except StopIteration:
        return
    steps.close()
    raise RuntimeError("the stream filter suspended")


def timings(engine: PiiEngine, *, quick: bool = False) -> dict[str, tuple[float, float]]:
    """Median and p95 milliseconds per text, by scenario."""
    plan = engine.prepare(PiiOptions())
    one_kb, ten_kb = _texts(1024, 60 if quick else 300), _texts(10240, 15 if quick else 60)
    ctx = GuardContext("t", "r", "m", b"secret")

    async def feed_deltas(text: str) -> None:
        f = PiiStreamFilter(lambda t, s: engine.analyze_plan(t, plan, since=s), PiiOptions(), ctx)
        for i in range(0, len(text), 4):
            await f.feed(text[i : i + 4])
        await f.flush()

    def stream(text: str) -> None:
        _drive(feed_deltas(text))

    def presidio(text: str) -> None:
        engine.presidio.analyze(text, language="en", score_threshold=0.5)

    for text in one_kb:
        engine.analyze_plan(text, plan)  # fill the cache for the cached run
    return {
        "1 KB": _measure(lambda t: engine.analyze_plan(t, plan, cache=False), one_kb),
        "10 KB": _measure(lambda t: engine.analyze_plan(t, plan, cache=False), ten_kb),
        "1 KB cached": _measure(lambda t: engine.analyze_plan(t, plan), one_kb),
        "1 KB streamed (4-char deltas)": _measure(stream, one_kb[:60]),
        "1 KB Presidio AnalyzerEngine": _measure(presidio, one_kb[:30]),
        "10 KB Presidio AnalyzerEngine": _measure(presidio, ten_kb[:5]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer timing runs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    engine = PiiEngine.build()
    print(f"engine built in {time.perf_counter() - started:.1f} s (no NER model: names skipped)")
    quality = evaluate(engine)
    entities = sorted(set(quality.tp) | set(quality.fp) | set(quality.fn))
    print(f"\n{'entity':<16}{'tp':>6}{'fp':>6}{'fn':>6}{'precision':>11}{'recall':>8}")
    for entity in entities:
        print(
            f"{entity:<16}{quality.tp[entity]:>6}{quality.fp[entity]:>6}{quality.fn[entity]:>6}"
            f"{quality.precision(entity):>11.3f}{quality.recall(entity):>8.3f}"
        )
    print(f"{'overall':<34}{quality.precision():>11.3f}{quality.recall():>8.3f}")
    print(
        f"\nclean corpus: {quality.clean_flagged}/{quality.clean_texts} texts flagged "
        f"(FP rate {quality.fp_rate:.3%}) {dict(quality.clean_findings)}"
    )
    print(f"\n{'timing (ms per text)':<34}{'median':>8}{'p95':>8}")
    for name, (median, p95) in timings(engine, quick=args.quick).items():
        print(f"{name:<34}{median:>8.3f}{p95:>8.3f}")


if __name__ == "__main__":
    main()
