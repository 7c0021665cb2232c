"""Term and pattern blocklists for input and output: rails that call no model.

Parameters (`custom_data`; lists of strings, all optional):

- `terms` / `patterns`: apply to both the user message and the assistant answer;
- `input_terms` / `input_patterns`: the user message only;
- `output_terms` / `output_patterns`: the assistant answer only.

Terms match whole words, case-insensitively (`bad` does not match `badge`). Patterns are
regular expressions (`regex` module syntax) matched as written, so add `(?i)` for
case-insensitive ones; they are validated like the gateway's own `denylist` guard (at
most 1000 characters, must not match the empty string) and each search has a time
limit, so a pathological pattern fails the rail instead of stalling it. Texts are
NFKC-normalised and stripped of zero-width characters before matching, so fullwidth
letters or a zero-width space inside a word do not slip through.

The output rail returns a `RailOutcome`, so it also works in NeMo's streaming output
rails, where each check sees one window of the answer (`chunk_size` tokens plus
`context_size` tokens of the window before). Matchers are compiled once per distinct
list of terms and patterns. Outcomes name the rule, never the matched text.
"""

import functools
import logging
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import regex
from nemoguardrails.actions import action
from nemoguardrails.actions.rail_outcome import RailOutcome

from rails.denylist import REGEX_TIMEOUT_S, compile_pattern
from rails.nemo.params import strings, text_of

log = logging.getLogger(__name__)

_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]"
)
_REASON = "The text contains blocked content."


def normalise(text: str) -> str:
    """NFKC with invisible characters removed (case kept: patterns match as written)."""
    text = unicodedata.normalize("NFKC", text)
    return text if text.isascii() else _INVISIBLE.sub("", text)


class Matcher:
    """The compiled terms and patterns of one stage."""

    __slots__ = ("rules",)

    def __init__(self, terms: tuple[str, ...], patterns: tuple[str, ...]) -> None:
        self.rules: list[tuple[str, regex.Pattern[str]]] = []
        words = sorted({normalise(t.strip()) for t in terms if t.strip()}, key=len, reverse=True)
        if words:
            alternation = "|".join(r"\s+".join(regex.escape(p) for p in w.split()) for w in words)
            self.rules.append(
                ("term", regex.compile(rf"(?<!\w)(?:{alternation})(?!\w)", regex.IGNORECASE))
            )
        for i, pattern in enumerate(patterns):
            try:
                self.rules.append((f"pattern[{i}]", compile_pattern(pattern)))
            except ValueError as exc:
                raise ValueError(f"blocklist pattern [{i}]: {exc}") from None

    def find(self, text: str) -> str | None:
        """The first rule that matches the text, or None."""
        if not self.rules or not text:
            return None
        text = normalise(text)
        for rule, pattern in self.rules:
            if pattern.search(text, timeout=REGEX_TIMEOUT_S) is not None:
                return rule
        return None


@functools.lru_cache(maxsize=128)
def matcher(terms: tuple[str, ...], patterns: tuple[str, ...]) -> Matcher:
    """The matcher for these lists, compiled on first use."""
    return Matcher(terms, patterns)


def stage_matcher(custom_data: Mapping[str, Any] | None, stage: str) -> Matcher:
    """The matcher of `stage` (`input` or `output`) for a config's `custom_data`."""
    data = custom_data or {}
    return matcher(
        strings(data, "terms") + strings(data, f"{stage}_terms"),
        strings(data, "patterns") + strings(data, f"{stage}_patterns"),
    )


def _check(config: Any, stage: str, text: str) -> RailOutcome:
    data = getattr(config, "custom_data", None)
    rule = stage_matcher(data if isinstance(data, Mapping) else None, stage).find(text)
    if rule is None:
        return RailOutcome.allow()
    log.info("blocklist: %s blocked by %s", stage, rule)
    return RailOutcome.block(reason=_REASON, metadata={"rule": rule, "stage": stage})


@action(is_system_action=True, name="blocklist_check_input")  # type: ignore[untyped-decorator]
async def blocklist_check_input(
    context: dict[str, Any] | None = None,
    config: Any = None,
    user_message: str | None = None,
    **kwargs: Any,
) -> RailOutcome:
    """Block a user message that contains a blocked term or pattern."""
    message = user_message if user_message is not None else (context or {}).get("user_message")
    return _check(config, "input", text_of(message))


@action(is_system_action=True, name="blocklist_check_output")  # type: ignore[untyped-decorator]
async def blocklist_check_output(
    context: dict[str, Any] | None = None,
    config: Any = None,
    bot_message: str | None = None,
    **kwargs: Any,
) -> RailOutcome:
    """Block an answer (or, streaming, a window of it) with a blocked term or pattern."""
    message = bot_message if bot_message is not None else (context or {}).get("bot_message")
    return _check(config, "output", text_of(message))
