"""Tenant regex recognizers and allow-patterns: checked at load, time-limited at run.

A tenant's regex runs on every prompt, so a bad one is a denial of service
(`(a|aa)+$` takes seconds on 40 `a`s). Defence in depth:

- at load (`compile_custom`, `compile_pattern`): a length limit, a real compile with
  the `regex` module, no empty matches, and a run over adversarial probe strings
  with a short timeout; any failure is a `ValueError` with the reason, so a policy
  with such a pattern is refused when it is saved;
- at run (`CompiledRecognizer.find`): every match carries `timeout=`; a recognizer
  that times out is skipped for that text and logged by entity name only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import regex

from rails.pii.context import ContextWords
from rails.pii.options import CustomRecognizer
from rails.pii.spans import Span

__all__ = [
    "MATCH_TIMEOUT",
    "MAX_PATTERN_LENGTH",
    "CompiledRecognizer",
    "compile_custom",
    "compile_pattern",
]

logger = logging.getLogger(__name__)

MAX_PATTERN_LENGTH = 512
MAX_CONTEXT_WORDS = 32
MATCH_TIMEOUT = 0.025
"""Seconds one tenant pattern may spend on one text."""
PROBE_TIMEOUT = 0.05
_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,47}")
_PROBES = (
    "a" * 64 + "!",
    "0" * 64 + "x",
    " " * 64 + "!",
    "ab" * 32 + "!",
    "a-" * 32 + "!",
    "aA0_-.@ /:" * 8 + "\n!",
    "x@" * 32 + "x.",
)


@dataclass(frozen=True, slots=True)
class CompiledRecognizer:
    """A validated tenant recognizer, ready to run."""

    name: str
    pattern: regex.Pattern[str]
    score: float
    context: ContextWords

    def find(self, text: str) -> list[Span]:
        """Matches in `text`; [] if the pattern runs out of time on it."""
        try:
            found = [m.span() for m in self.pattern.finditer(text, timeout=MATCH_TIMEOUT)]
        except TimeoutError:
            logger.warning("PII recognizer %s timed out; skipped for this text", self.name)
            return []
        return [
            Span(self.name, start, end, self.score)
            for start, end in found
            if end > start and (not self.context or self.context.near(text, start, end))
        ]


def compile_custom(recognizer: CustomRecognizer) -> CompiledRecognizer:
    """Validate a tenant recognizer; raises `ValueError` saying what is wrong."""
    if not _NAME.fullmatch(recognizer.name):
        raise ValueError(
            f"recognizer name {recognizer.name!r}: use 1-48 upper-case letters, digits "
            "or underscores, starting with a letter"
        )
    what = f"recognizer {recognizer.name}"
    if not 0.0 <= recognizer.score <= 1.0:
        raise ValueError(f"{what}: score must be between 0 and 1")
    if len(recognizer.context) > MAX_CONTEXT_WORDS:
        raise ValueError(f"{what}: at most {MAX_CONTEXT_WORDS} context words")
    if any(len(word) > 64 for word in recognizer.context):
        raise ValueError(f"{what}: context words are at most 64 characters")
    pattern = compile_pattern(recognizer.pattern, what)
    return CompiledRecognizer(
        recognizer.name, pattern, recognizer.score, ContextWords(recognizer.context)
    )


def compile_pattern(pattern: str, what: str, *, allow_empty: bool = False) -> regex.Pattern[str]:
    """Compile a tenant regex or raise `ValueError` naming `what` and the reason."""
    if not pattern:
        raise ValueError(f"{what}: empty pattern")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"{what}: pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}"
        )
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"{what}: invalid regular expression: {exc}") from None
    try:
        if not allow_empty and compiled.fullmatch("", timeout=PROBE_TIMEOUT) is not None:
            raise ValueError(f"{what}: pattern matches the empty string")
        for probe in _PROBES:
            compiled.search(probe, timeout=PROBE_TIMEOUT)
    except TimeoutError:
        raise ValueError(
            f"{what}: pattern backtracks catastrophically (timed out on a probe string); "
            "avoid nested or overlapping repetition such as (a|aa)+ or (a+)+"
        ) from None
    return compiled
