"""Test action: rewrite the user message."""

from __future__ import annotations

from typing import Any

from nemoguardrails.actions import action  # type: ignore[import-untyped]
from nemoguardrails.actions.rail_outcome import (  # type: ignore[import-untyped]
    RailOutcome,
    TransformTarget,
)


@action(is_system_action=True)  # type: ignore[misc]
async def withhold_codename(context: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    text = str((context or {}).get("user_message") or "")
    if "codename" not in text:
        return RailOutcome.allow()
    new = text.replace("codename", "[withheld]")
    return RailOutcome.transform([(TransformTarget.USER_MESSAGE, new)])
