"""The PII guard: Presidio-backed detection, actions and streaming.

Build one `PiiEngine` per process at start (`PiiEngine.build()`, a second or two),
then one `PiiGuard(engine, options)` per policy entry. The guard rewrites prompts
(`input`) and answers (`output`), whole or streamed; pseudonyms go into `ctx.vault`
and `restore` / `RestoreFilter` put them back after the last output guard.

Importing this package is cheap: `options` and `custom` (policy validation) need
no Presidio; the names below are loaded from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rails.pii.actions import apply_actions, restore
    from rails.pii.custom import compile_custom, compile_pattern
    from rails.pii.engine import PiiEngine, Plan
    from rails.pii.guard import PiiGuard
    from rails.pii.options import Action, CustomRecognizer, PiiOptions
    from rails.pii.spans import Span
    from rails.pii.stream import PiiStreamFilter, RestoreFilter

__all__ = [
    "Action",
    "CustomRecognizer",
    "PiiEngine",
    "PiiGuard",
    "PiiOptions",
    "PiiStreamFilter",
    "Plan",
    "RestoreFilter",
    "Span",
    "apply_actions",
    "compile_custom",
    "compile_pattern",
    "restore",
]

_HOMES = {
    "apply_actions": "actions",
    "restore": "actions",
    "compile_custom": "custom",
    "compile_pattern": "custom",
    "PiiEngine": "engine",
    "Plan": "engine",
    "PiiGuard": "guard",
    "Action": "options",
    "CustomRecognizer": "options",
    "PiiOptions": "options",
    "Span": "spans",
    "PiiStreamFilter": "stream",
    "RestoreFilter": "stream",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rails.pii' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rails.pii.{home}"), name)
