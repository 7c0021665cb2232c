"""Reading a NeMo config's parameters (`custom_data`) in its actions.

Bundled configs' `actions.py` files are loaded by NeMo from their directories, outside
the package; they import these helpers from the installed `rails` package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["strings", "text_of"]


def strings(data: Mapping[str, Any], key: str, *, strip: bool = False) -> tuple[str, ...]:
    """A parameter that is a string or a list of strings, as a tuple (`strip`: trimmed,
    blanks dropped); `TypeError` naming the key for anything else."""
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key}: expected a list of strings")
    if strip:
        return tuple(v.strip() for v in value if v.strip())
    return tuple(value)


def text_of(value: Any) -> str:
    """A message's text: a string, or the text parts of a multi-part content list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""
