"""The fast pass: find the few places in a text where an entity could start.

Everything expensive (Presidio recognizers, phone-number parsing, checksums) runs
only on the windows found here, so a text without digits, `@`, `://`, `::` or a
credential prefix costs a handful of C-level substring searches. Each finder is a
literal or single-character-class search because CPython's `re` is fastest when a
pattern starts with a literal or a small class (an alternation of many branches
was measured 10-15x slower per KB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import regex

from rails.pii.context import lowered_ascii
from rails.pii.spans import Span

__all__ = [
    "GITHUB_MARKERS",
    "SECRET_MARKERS",
    "Candidates",
    "Detector",
    "NumberRun",
    "Window",
    "scan",
]

Window = tuple[int, int]
"""`(start, end)` offsets of a candidate in the scanned text."""


class NumberRun(NamedTuple):
    """Digits joined by separators, e.g. `+234 803 123 4567`; `digits` counts digits only."""

    start: int
    end: int
    digits: int


# Digits and separators, at least 7 characters, starting and ending with a digit:
# phones, cards, ids, IPv4. (Simple classes: measured 2x faster than stricter forms.)
# These two use the `regex` module: same matches for these ASCII-only patterns, but
# its scan for a leading class is faster (IBAN ~3x, numbers ~1.2x per KB).
_NUMBER = regex.compile(r"[0-9][0-9 \t.\-/()]{5,}[0-9]")
_IBAN = regex.compile(r"[A-Z][A-Z][0-9][0-9](?:[ \-]?[A-Z0-9]{4}){2}")
_EMAIL_LOCAL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}")
"""The local part of an email, matched on the reversed text before the `@`."""
_EMAIL_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)+")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,15}\Z")
_URL_REST = re.compile(r"[^\s<>\"'`]{1,2048}")
# `::` or three groups between colons: never a time like 10:30:00.
_IPV6 = re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_IPV6_TOKEN = re.compile(r"[0-9A-Fa-f:.]{2,64}")
_IPV6_LEFT = re.compile(r"[0-9A-Fa-f:.]{1,64}\Z")
_NOT_DIGITS = str.maketrans("", "", " \t.-/()+")
_IPV6_ZONE = re.compile(r"(?:%[0-9A-Za-z]{1,16})?(?:/[0-9]{1,3})?")

# Literal prefixes of the credentials we recognise; a text with none skips them all.
GITHUB_MARKERS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")
SECRET_MARKERS = ("sk-", "rg-", "AKIA", "ASIA", "eyJ", "-----BEGIN", *GITHUB_MARKERS)


@dataclass(slots=True)
class Candidates:
    """Candidate windows by kind; windows are maximal, so recognizers see whole tokens."""

    numbers: list[NumberRun] = field(default_factory=list)
    """Runs of at least 4 digits and 7 characters (phones, cards, ids, IPv4)."""
    ibans: list[int] = field(default_factory=list)
    """Offsets of `CC99 XXXX XXXX` shapes: where an IBAN could start."""
    emails: list[Window] = field(default_factory=list)
    urls: list[Window] = field(default_factory=list)
    ipv6: list[Window] = field(default_factory=list)
    secrets: bool = False
    lowered: str | None = None
    """`text.lower()` if the text is ASCII (`context.lowered_ascii`): for context search."""

    def drop_before(self, pos: int) -> None:
        """Forget candidates that end before `pos` (text already dealt with)."""
        self.numbers = [n for n in self.numbers if n.end > pos]
        self.ibans = [i for i in self.ibans if i + 42 > pos]
        self.emails = [w for w in self.emails if w[1] > pos]
        self.urls = [w for w in self.urls if w[1] > pos]
        self.ipv6 = [w for w in self.ipv6 if w[1] > pos]

    def __bool__(self) -> bool:
        return bool(
            self.numbers or self.ibans or self.emails or self.urls or self.ipv6 or self.secrets
        )


class Detector(Protocol):
    """A family of recognizers fed by the scan (internal extension point of the engine)."""

    entities: frozenset[str]

    def detect(
        self, text: str, found: Candidates, wanted: frozenset[str], threshold: float
    ) -> list[Span]:
        """Spans of the `wanted` entities in `text`; may skip work that cannot reach
        `threshold` (e.g. a phone number without context words)."""
        ...


def scan(text: str) -> Candidates:
    """Find candidate windows in `text` (offsets into `text`)."""
    found = Candidates()
    numbers = found.numbers
    for m in _NUMBER.finditer(text):
        start, end = m.span()
        if start and text[start - 1] == "(":
            start -= 1
        if start and text[start - 1] == "+":
            start -= 1
        numbers.append(NumberRun(start, end, len(text[start:end].translate(_NOT_DIGITS))))
    for m in _IBAN.finditer(text):
        if not _is_word(text, m.start() - 1):
            found.ibans.append(m.start())
    if "@" in text:
        _find_emails(text, found.emails)
    if "://" in text or "www." in text:
        _find_urls(text, found.urls)
    if ":" in text:
        _find_ipv6(text, found.ipv6)
    found.secrets = any(marker in text for marker in SECRET_MARKERS)
    found.lowered = lowered_ascii(text)
    return found


def _find_emails(text: str, out: list[Window]) -> None:
    at = text.find("@")
    while at != -1:
        # The longest run of local-part characters ending at `@` (at most 64), found
        # by matching backwards: a forward search ending in `\Z` would try each start.
        left = _EMAIL_LOCAL.match(text[max(0, at - 64) : at][::-1])
        right = _EMAIL_DOMAIN.match(text, at + 1, at + 256)
        if left and right:
            out.append((at - left.end(), right.end()))
        at = text.find("@", at + 1)


def _find_urls(text: str, out: list[Window]) -> None:
    for marker in ("://", "www."):
        pos = text.find(marker)
        while pos != -1:
            start = pos
            if marker == "://":
                scheme = _URL_SCHEME.search(text, max(0, pos - 16), pos)
                start = scheme.start() if scheme else pos
            rest = _URL_REST.match(text, pos)
            end = rest.end() if rest else pos + len(marker)
            if not out or start >= out[-1][1]:
                out.append((start, end))
            pos = text.find(marker, end)
    out.sort()


def _find_ipv6(text: str, out: list[Window]) -> None:
    pos = 0
    while (m := _IPV6.search(text, pos)) is not None:
        left = _IPV6_LEFT.search(text, max(0, m.start() - 64), m.start())
        start = left.start() if left else m.start()
        token = _IPV6_TOKEN.match(text, start)
        end = token.end() if token else m.end()
        zone = _IPV6_ZONE.match(text, end)
        if zone:
            end = zone.end()
        body = text[start:end].split("%", 1)[0].split("/", 1)[0]
        isolated = not (_is_word(text, start - 1) or _is_word(text, end))
        if isolated and ("::" in body or body.count(":") >= 7):
            out.append((start, end))
        pos = max(end, m.end())


def _is_word(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] == "_")
