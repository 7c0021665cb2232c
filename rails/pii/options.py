"""Options of the `pii` guard, as written in a tenant policy."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Action", "CustomRecognizer", "PiiOptions"]

Action = Literal["redact", "mask", "hash", "block", "pseudonymize"]


class CustomRecognizer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tenant's own regex recognizer."""

    name: str
    """Entity name it reports, e.g. `ORDER_ID` (upper case, digits, underscores)."""
    pattern: str
    """Regular expression; validated at load time and run with a time limit."""
    score: float = 0.8
    context: tuple[str, ...] = ()
    """Words that must appear near a match for it to count (empty: always counts)."""


class PiiOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    entities: tuple[str, ...] | None = None
    """Entity types to look for; `None` means every supported type."""
    action: Action = "redact"
    """What to do with a finding."""
    actions: dict[str, Action] = {}
    """Per-entity overrides of `action`, e.g. `{CREDIT_CARD: block}`."""
    score_threshold: float = 0.5
    """Findings scoring below this are ignored."""
    allow: tuple[str, ...] = ()
    """Values never treated as PII (exact, case-insensitive)."""
    allow_patterns: tuple[str, ...] = ()
    """Regexes; a finding whose text fully matches one is ignored."""
    recognizers: tuple[CustomRecognizer, ...] = ()
    """Extra regex recognizers of this tenant."""
    mask_keep: int = 4
    """`mask` keeps this many trailing characters."""
