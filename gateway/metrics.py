"""Process metrics, served as Prometheus text at `/metrics`.

A deliberately small registry. Every metric is declared once in `DECLARED` (name, help,
label names, and the bucket bounds of a histogram); the registry refuses a name that is
not declared there. Updating a series is a dictionary update, cheap enough for the hot
path; everything runs on the event loop's thread, so there are no locks. With several
workers each process serves its own counts.

    counters    `add(name, labels, by)` adds an int or a float (e.g. USD) to one series;
                `inc(name, label, by)` is the same for a counter with at most one label
                (an empty `label` is the series without labels)
    histograms  `observe(name, value, labels)`; per-bucket counts are kept apart and
                made cumulative when rendered, with `_sum`, `_count` and `le="+Inf"`

Label sets are bounded: a metric keeps at most `MAX_SERIES` of them. Further label sets
are folded into one series whose label values are all `_other`, and each fold counts
in `railgate_metrics_overflow_total{metric}`. Label values are configured names and
outcome codes, never request ids, user ids, keys or paths.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

__all__ = [
    "DECLARED",
    "LATENCY_BUCKETS",
    "MAX_SERIES",
    "OTHER",
    "OVERHEAD_BUCKETS",
    "Counter",
    "Counters",
    "Histogram",
    "Labels",
]

Labels = tuple[str, ...]

MAX_SERIES = 1000
"""Distinct label sets a metric keeps before it folds new ones into `_other`."""

OTHER = "_other"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
"""Seconds; from a cached answer to a long generation."""

OVERHEAD_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
"""Seconds; what the gateway adds to a call, usually well under a millisecond."""


@dataclass(frozen=True, slots=True)
class Counter:
    """A monotonic counter."""

    name: str
    help: str
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class Histogram:
    """A distribution of observed values over fixed, increasing bucket bounds."""

    name: str
    help: str
    labels: Labels
    buckets: tuple[float, ...]


OVERFLOW = Counter(
    "railgate_metrics_overflow_total",
    "Label sets folded into `_other` because a metric had too many.",
    ("metric",),
)

DECLARED: tuple[Counter | Histogram, ...] = (
    Counter(
        "railgate_requests_total",
        "Requests to the OpenAI routes by tenant, model and HTTP status (tenant and model"
        ' are "" when the request never became a call).',
        ("tenant", "model", "status"),
    ),
    Histogram(
        "railgate_request_duration_seconds",
        "Total latency of calls: from the request to the last byte (or the error).",
        ("model",),
        LATENCY_BUCKETS,
    ),
    Histogram(
        "railgate_upstream_duration_seconds",
        "Time calls spent in the upstream call (to the end of the stream).",
        ("model",),
        LATENCY_BUCKETS,
    ),
    Histogram(
        "railgate_gateway_overhead_seconds",
        "What the gateway added to calls: total latency minus the upstream's.",
        ("model",),
        OVERHEAD_BUCKETS,
    ),
    Histogram(
        "railgate_time_to_first_token_seconds",
        "Time to the first event of streamed answers.",
        ("model",),
        LATENCY_BUCKETS,
    ),
    Counter(
        "railgate_tokens_total",
        "Tokens of calls: prompt, completion, cached and reasoning (the main call), and"
        " rails_prompt and rails_completion (the rails' model calls).",
        ("tenant", "model", "kind"),
    ),
    Counter(
        "railgate_cost_usd_total",
        "What calls cost in USD: the main call plus its rails' model calls.",
        ("tenant", "model"),
    ),
    Counter(
        "railgate_guard_actions_total",
        "Rail findings by `<guard>.<action>` (e.g. pii.redacted).",
        ("tenant", "action"),
    ),
    Counter("railgate_blocked_total", "Calls a rail blocked.", ("tenant",)),
    Counter(
        "railgate_upstream_errors_total",
        "Calls whose upstream call failed, by provider and error code.",
        ("provider", "code"),
    ),
    Counter(
        "railgate_http_requests_total",
        "Requests to the other routes (admin, health, metrics...) by HTTP status.",
        ("status",),
    ),
    Counter(
        "railgate_telemetry_exported_total",
        "Telemetry items sent, by exporter.",
        ("exporter",),
    ),
    Counter(
        "railgate_telemetry_dropped_total",
        "Telemetry items lost (queue full, export failed or shutdown), by exporter.",
        ("exporter",),
    ),
    Counter(
        "railgate_limits_fail_open_total",
        "Requests admitted without limits because the store failed.",
    ),
    Counter(
        "railgate_limits_fail_closed_total",
        "Requests refused (503) because the store failed.",
    ),
    Counter(
        "railgate_limits_store_errors_total",
        "Limiter calls to the store that failed or timed out.",
    ),
    Counter(
        "railgate_limits_rejected_total",
        "Requests refused with 429, by kind of limit.",
        ("kind",),
    ),
    Counter(
        "railgate_pacing_waits_total",
        "Requests held back to stay under a provider's limits.",
    ),
    Counter(
        "railgate_pacing_rejected_total",
        "Requests refused because a provider's queue was full.",
        ("kind",),
    ),
    Counter("railgate_usage_written_total", "Usage records stored in the ledger."),
    Counter(
        "railgate_usage_dropped_total",
        "Usage records lost: the ledger buffer was full, or shutdown or the store refused them.",
    ),
    Counter(
        "railgate_usage_write_errors_total",
        "Ledger writes that failed (records stay buffered).",
    ),
    OVERFLOW,
)
"""Every metric `/metrics` serves, in the order it serves them."""


class _Bins:
    """One histogram series: a count per bucket (the last one is `+Inf`) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0


class Counters:
    """The process's metrics registry (see the module docstring)."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self._max_series = max_series
        self._declared = {metric.name: metric for metric in DECLARED}
        self._counts: dict[str, dict[Labels, float]] = {
            m.name: {} for m in DECLARED if isinstance(m, Counter)
        }
        self._bins: dict[str, dict[Labels, _Bins]] = {
            m.name: {} for m in DECLARED if isinstance(m, Histogram)
        }
        self._buckets = {m.name: m.buckets for m in DECLARED if isinstance(m, Histogram)}

    def inc(self, name: str, label: str = "", by: float = 1) -> None:
        """Add `by` to counter `name`, to the series `{<its label>="label"}` if `label`."""
        self.add(name, (label,) if label else (), by)

    def add(self, name: str, labels: Labels, by: float = 1) -> None:
        """Add `by` to the series of counter `name` with these label values (in the
        declared order of its labels)."""
        series = self._counts[name]
        value = series.get(labels)
        if value is None:
            labels = self._admit(name, len(series), labels)
            value = series.get(labels, 0)
        series[labels] = value + by

    def observe(self, name: str, value: float, labels: Labels = ()) -> None:
        """Count `value` (e.g. seconds) in histogram `name`, in the series of `labels`."""
        series = self._bins[name]
        bins = series.get(labels)
        if bins is None:
            labels = self._admit(name, len(series), labels)
            bins = series.get(labels)
            if bins is None:
                bins = series[labels] = _Bins(self._buckets[name])
        bins.counts[bisect_left(bins.bounds, value)] += 1
        bins.total += value

    def get(self, name: str, label: str = "") -> float:
        """The value of a series of counter `name`, as `inc` addresses it."""
        return self._counts[name].get((label,) if label else (), 0)

    def render(self) -> bytes:
        """All declared metrics in the Prometheus text format (version 0.0.4)."""
        lines: list[str] = []
        for metric in DECLARED:
            kind = "counter" if isinstance(metric, Counter) else "histogram"
            lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {kind}"]
            if isinstance(metric, Counter):
                lines += _counter_lines(metric, self._counts[metric.name])
            else:
                lines += _histogram_lines(metric, self._bins[metric.name])
        return ("\n".join(lines) + "\n").encode()

    def _admit(self, name: str, known: int, labels: Labels) -> Labels:
        """The key of a label set `name` has not seen (it has `known` series): the label
        set itself, or the `_other` series once `name` is full."""
        expected = len(self._declared[name].labels)
        if labels and len(labels) != expected:
            raise ValueError(f"{name} takes {expected} label values, got {len(labels)}")
        if known < self._max_series:
            return labels
        folds = self._counts[OVERFLOW.name]  # bounded by DECLARED: never folded itself
        folds[(name,)] = folds.get((name,), 0) + 1
        return (OTHER,) * expected


def _counter_lines(metric: Counter, series: dict[Labels, float]) -> list[str]:
    if not series and len(metric.labels) <= 1:  # `inc` can address it: visible at 0
        return [f"{metric.name} 0"]
    return [
        f"{metric.name}{_braces(metric.labels, values)} {_number(value)}"
        for values, value in sorted(series.items())
    ]


def _histogram_lines(metric: Histogram, series: dict[Labels, _Bins]) -> list[str]:
    lines: list[str] = []
    bounds = [*(repr(float(bound)) for bound in metric.buckets), "+Inf"]
    for values in sorted(series):
        bins = series[values]
        with_le = (*metric.labels, "le") if values else ("le",)
        cumulative = 0
        for bound, count in zip(bounds, bins.counts, strict=True):
            cumulative += count
            lines.append(f"{metric.name}_bucket{_braces(with_le, (*values, bound))} {cumulative}")
        labels = _braces(metric.labels, values)
        lines.append(f"{metric.name}_sum{labels} {_number(bins.total)}")
        lines.append(f"{metric.name}_count{labels} {cumulative}")
    return lines


def _braces(names: Labels, values: Labels) -> str:
    """`{name="value",...}` with values escaped; "" for the series without labels."""
    if not values:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(value)
