"""Topical input rail: keep conversations on the allowed topics.

Two steps, cheapest first:

1. `denied_keywords` (no model call): a message containing one of these words or phrases
   (whole words, case-insensitive, after NFKC normalisation with invisible characters
   removed) is blocked at once.
2. The rails model is asked, through the `topic_check` prompt task of `config.yml`,
   whether the message is off topic given `allowed_topics` and `denied_topics`; the
   answer is parsed like NeMo's self-check answers (`Yes` blocks, `No` allows, anything
   else blocks). With both lists empty no model call is made and the message passes.

Parameters (`custom_data`; defaults in `config.yml`): `allowed_topics`, `denied_topics`,
`denied_keywords` (lists of strings). A model of type `topic_check` in the config would
be used instead of the main (rails) model.
"""

import functools
import logging
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from nemoguardrails.actions import action
from nemoguardrails.actions.rail_outcome import RailOutcome
from nemoguardrails.library.self_check.utils import (
    run_self_check_task,
)

from rails.nemo.params import strings, text_of

log = logging.getLogger(__name__)

TASK = "topic_check"

_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]"
)


def normalise(text: str) -> str:
    """NFKC, invisible characters removed, case-folded."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).casefold()


@functools.lru_cache(maxsize=64)
def keyword_regex(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """One whole-word, case-insensitive regex for the keywords (any whitespace inside a
    phrase matches any run of whitespace)."""
    words = sorted({normalise(k) for k in keywords}, key=len, reverse=True)
    if not words:
        return None
    alternation = "|".join(r"\s+".join(re.escape(w) for w in k.split()) for k in words)
    return re.compile(rf"(?<!\w)(?:{alternation})(?!\w)")


@action(is_system_action=True, name="topic_guard_check")  # type: ignore[untyped-decorator]
async def topic_guard_check(
    llm_task_manager: Any,
    llms: dict[str, Any] | None = None,
    llm: Any = None,
    context: dict[str, Any] | None = None,
    config: Any = None,
    user_message: str | None = None,
    **kwargs: Any,
) -> RailOutcome:
    """Block a user message that is off topic (denied keyword, or the model says so)."""
    data = getattr(config, "custom_data", None)
    data = data if isinstance(data, Mapping) else {}
    allowed = strings(data, "allowed_topics", strip=True)
    denied = strings(data, "denied_topics", strip=True)
    keywords = keyword_regex(strings(data, "denied_keywords", strip=True))

    message = user_message if user_message is not None else (context or {}).get("user_message")
    text = text_of(message)
    if not text.strip():
        return RailOutcome.allow()

    if keywords is not None and keywords.search(normalise(text)):
        log.info("topic guard: blocked by a denied keyword")
        return RailOutcome.block(
            reason="The message is about a topic the assistant does not discuss.",
            metadata={"rule": "denied_keywords"},
        )
    if not allowed and not denied:
        return RailOutcome.allow()

    on_topic, _answer = await run_self_check_task(
        task=TASK,
        prompt_context={
            "user_input": text,
            "allowed_topics": list(allowed),
            "denied_topics": list(denied),
        },
        llms=llms or {},
        default_task=TASK,
        main_llm=llm,
        llm_task_manager=llm_task_manager,
        lowest_temperature=getattr(config, "lowest_temperature", 0.0),
    )
    if on_topic:
        return RailOutcome.allow()
    log.info("topic guard: the model judged the message off topic")
    return RailOutcome.block(
        reason="The message is off topic for this assistant.",
        metadata={"rule": "topic_check"},
    )
