"""Options of the `nemo` guard, as written in a tenant policy.

    input:
      - nemo: {config: jailbreak-heuristics}
      - nemo: {config: topic-guard, params: {denied_topics: [politics]}, mode: parallel}
    output:
      - nemo: {config: self-check, chunk_size: 200, context_size: 50}

`config` names a bundled configuration (`rails/nemo/configs/`), one in the gateway's
`rails.configs_dir`, or one uploaded through the admin API; `params` are merged into that configuration's `custom_data`, where
its actions read them. This module imports nothing heavy: policies parse without NeMo.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["CONFIG_NAME", "Mode", "NemoOptions", "nemo_problems"]

Mode = Literal["sequential", "parallel"]
CONFIG_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
"""A config reference: a plain name, never a path (no `/`, no `..`)."""


class NemoOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    config: str
    """Name of a bundled config, a directory in `rails.configs_dir`, or an uploaded config."""
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    """Merged into the config's `custom_data` (the bundled configs document theirs)."""
    mode: Mode = "sequential"
    """`parallel` (input stage only): the check runs while the upstream call is already
    on its way, and a violation cancels it. Only for rails that judge, never rewrite."""
    chunk_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    """Streaming output rails: tokens per checked window (default: the config's)."""
    context_size: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    """Streaming output rails: tokens of the previous window each check also sees."""


def nemo_problems(options: NemoOptions) -> list[tuple[str, str]]:
    """Parse-time checks that need no NeMo: the name's shape and the window sizes.
    Whether the config exists and compiles is checked when the guard is built."""
    problems: list[tuple[str, str]] = []
    if not CONFIG_NAME.fullmatch(options.config):
        problems.append(
            (".config", "Expected a config name: lower-case letters, digits, '.', '_', '-'")
        )
    if (
        options.chunk_size is not None
        and options.context_size is not None
        and options.context_size >= options.chunk_size
    ):
        problems.append((".context_size", "Must be smaller than chunk_size"))
    return problems
