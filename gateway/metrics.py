"""Process counters, served as Prometheus text at `/metrics`.

A deliberately small registry: named monotonic counters with optional labels, each
declared once with its help text. Incrementing is a dictionary update, cheap enough
for the hot path. With several workers each process serves its own counts.
"""

from __future__ import annotations

__all__ = ["Counters"]

_HELP = {
    "railgate_limits_fail_open_total": "Requests admitted without limits because the store failed.",
    "railgate_limits_fail_closed_total": "Requests refused (503) because the store failed.",
    "railgate_limits_store_errors_total": "Limiter calls to the store that failed or timed out.",
    "railgate_limits_rejected_total": "Requests refused with 429, by kind of limit.",
    "railgate_pacing_waits_total": "Requests held back to stay under a provider's limits.",
    "railgate_pacing_rejected_total": "Requests refused because a provider's queue was full.",
    "railgate_usage_written_total": "Usage records stored in the ledger.",
    "railgate_usage_dropped_total": "Usage records lost: the ledger buffer was full, or shutdown"
    " or the store refused them.",
    "railgate_usage_write_errors_total": "Ledger writes that failed (records stay buffered).",
}


class Counters:
    def __init__(self) -> None:
        self._values: dict[tuple[str, str], int] = {}

    def inc(self, name: str, label: str = "", by: int = 1) -> None:
        """Add `by` to `name` (one of the declared counters), optionally `{kind="label"}`."""
        key = (name, label)
        self._values[key] = self._values.get(key, 0) + by

    def get(self, name: str, label: str = "") -> int:
        return self._values.get((name, label), 0)

    def render(self) -> bytes:
        lines: list[str] = []
        for name, help_text in _HELP.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            series = sorted((lbl, v) for (n, lbl), v in self._values.items() if n == name)
            if not series:
                lines.append(f"{name} 0")
            for label, value in series:
                lines.append(f'{name}{{kind="{label}"}} {value}' if label else f"{name} {value}")
        return ("\n".join(lines) + "\n").encode()
