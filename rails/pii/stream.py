"""PII in streamed answers: hold back only what a later delta could still change.

`PiiStreamFilter` keeps the unreleased tail of the answer and, whenever at least
`STEP` characters could go out, analyses the held text (plus a little already-sent
text for context words) and releases everything up to the last safe boundary:

- never the last `WINDOW` characters: the longest entity that contains spaces (an
  IBAN written in groups, 42 characters) must fit in it;
- never inside a token (an email, a URL, a JWT or an API key can be long): cuts go
  after whitespace or after a character no entity contains (`"<>{}[]` and backtick,
  so compact JSON still flows); a token is held whole up to `MAX_TOKEN` characters;
- never inside a detected entity, unless more than `MAX_HOLD` characters are held
  (a tenant pattern matching without end): then the entity is cut and its first
  part gets the action;
- never past `-----BEGIN … PRIVATE KEY-----` until its END line arrives; after
  `PEM_MAX` characters without one, the block so far is treated as the key and the
  rest is dropped up to the END line (fail closed).

The released region gets the same actions as a whole text; `flush()` releases the
rest. `RestoreFilter` puts pseudonymized values back into an answer and holds back
only a possible placeholder prefix (from the last `<`, at most the longest placeholder).
Both only compute: their `feed`/`flush` coroutines never suspend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rails.base import Finding, GuardContext
from rails.pii.actions import MAX_PLACEHOLDER, apply_actions, restore, restore_spans
from rails.pii.credentials import PEM_BEGIN, PEM_END, PEM_MAX
from rails.pii.options import PiiOptions
from rails.pii.spans import Span

__all__ = ["MAX_TOKEN", "STEP", "WINDOW", "PiiStreamFilter", "RestoreFilter"]

WINDOW = 64
STEP = 64
MAX_TOKEN = 2048
MAX_HOLD = MAX_TOKEN + WINDOW + STEP
CONTEXT_TAIL = 64
_BOUNDARIES = (" ", "\n", "\t", "\r", '"', "<", ">", "{", "}", "[", "]", "`")


class PiiStreamFilter:
    """Detects and acts on PII in one streamed answer (one choice)."""

    def __init__(
        self,
        analyze: Callable[[str, int], Sequence[Span]],
        options: PiiOptions,
        ctx: GuardContext,
        *,
        shadow: bool = False,
        hold_keys: bool = True,
    ) -> None:
        """`analyze(text, since)` returns the spans of `text` that end after `since`
        (the engine with the guard's plan); `hold_keys` holds private-key blocks
        whole (when PRIVATE_KEY is wanted)."""
        self._analyze = analyze
        self._hold_keys = hold_keys
        self._options = options
        self._ctx = ctx
        self._shadow = shadow
        self._buf = ""
        self._offset = 0
        """Position of `_buf` in the whole answer (for findings)."""
        self._tail = ""
        """Last released original text, for context words only."""
        self._dropping = False
        """Inside an over-long private key block: drop until its END line."""

    async def feed(self, text: str) -> str:
        if not text:
            return ""
        self._buf += text
        out = self._release(final=False)
        return text if self._shadow else out

    async def flush(self) -> str:
        out = self._release(final=True)
        return "" if self._shadow else out

    def _release(self, *, final: bool) -> str:
        if self._dropping and not self._drop_key():
            return ""
        buf = self._buf
        if not buf:
            return ""
        if final:
            cut = len(buf)
        else:
            cut, forced = self._boundary(buf)
            if forced:
                return self._force_key(cut)
            if cut <= 0:
                return ""
        view = self._tail + buf
        shift = len(self._tail)
        spans = [s.shifted(-shift) for s in self._analyze(view, shift) if s.end > shift]
        spans = [s if s.start >= 0 else Span(s.entity, 0, s.end, s.score) for s in spans]
        if not final:
            hard = len(buf) > MAX_HOLD
            for i, span in sorted(enumerate(spans), key=lambda p: -p[1].start):
                if span.start < cut < span.end:
                    if hard:
                        spans[i] = Span(span.entity, span.start, cut, span.score)
                    else:
                        cut = span.start
            if cut <= 0:
                return ""
        return self._emit(cut, [s for s in spans if s.end <= cut])

    def _emit(self, cut: int, spans: Sequence[Span]) -> str:
        region = self._buf[:cut]
        out = apply_actions(
            region,
            spans,
            self._options,
            self._ctx,
            "output",
            shadow=self._shadow,
            offset=self._offset,
        )
        self._tail = (self._tail + region)[-CONTEXT_TAIL:]
        self._buf = self._buf[cut:]
        self._offset += cut
        return out

    def _boundary(self, buf: str) -> tuple[int, bool]:
        """Last safe cut before the window, and whether a key block forces one."""
        limit = len(buf) - WINDOW
        if limit < STEP:
            return 0, False
        if self._hold_keys and "-----BEGIN" in buf:
            for begin in PEM_BEGIN.finditer(buf):
                if PEM_END.search(buf, begin.end()) is None:
                    if len(buf) - begin.start() >= PEM_MAX:
                        return begin.start(), True
                    limit = min(limit, begin.start())
                    break
        cut = max(buf.rfind(c, 0, limit) for c in _BOUNDARIES) + 1
        if len(buf) - cut > MAX_TOKEN + WINDOW:
            cut = limit  # an endless token: release it in pieces
        return cut, False

    def _force_key(self, begin: int) -> str:
        """An unterminated key block reached PEM_MAX: emit what precedes it, then the
        block as one PRIVATE_KEY, and drop text until its END line."""
        out = self._release_prefix(begin)
        key = Span("PRIVATE_KEY", 0, len(self._buf), 1.0)
        out += self._emit(len(self._buf), [key])
        self._dropping = True
        return out

    def _release_prefix(self, begin: int) -> str:
        if begin <= 0:
            return ""
        view = self._tail + self._buf[:begin]
        shift = len(self._tail)
        spans = [s.shifted(-shift) for s in self._analyze(view, shift) if s.start >= shift]
        return self._emit(begin, spans)

    def _drop_key(self) -> bool:
        """Drop held text up to a key's END line; True once it was found."""
        end = PEM_END.search(self._buf)
        if end is None:
            self._offset += max(0, len(self._buf) - WINDOW)
            self._buf = self._buf[-WINDOW:]
            return False
        self._offset += end.end()
        self._buf = self._buf[end.end() :]
        self._dropping = False
        return True


class RestoreFilter:
    """Puts this request's pseudonymized values back into a streamed answer.

    Holds back at most one possible placeholder prefix: from the last `<`, if what
    follows could still grow into a placeholder of `vault`. If `ctx` is given,
    a `restored` finding is recorded per placeholder (positions in the input stream).
    """

    def __init__(self, vault: dict[str, str], *, ctx: GuardContext | None = None) -> None:
        self._vault = vault
        self._ctx = ctx
        self._buf = ""
        self._offset = 0

    async def feed(self, text: str) -> str:
        if not self._vault:
            return text
        buf = self._buf + text
        lt = buf.rfind("<")
        hold = (
            lt != -1
            and len(buf) - lt < MAX_PLACEHOLDER
            and ">" not in buf[lt:]
            and self._prefix(buf[lt:])
        )
        cut = lt if hold else len(buf)
        return self._emit(buf, cut)

    async def flush(self) -> str:
        return self._emit(self._buf, len(self._buf))

    def _prefix(self, tail: str) -> bool:
        return any(key.startswith(tail) for key in self._vault)

    def _emit(self, buf: str, cut: int) -> str:
        region, self._buf = buf[:cut], buf[cut:]
        if self._ctx is not None:
            for start, end, entity in restore_spans(region, self._vault):
                self._ctx.findings.append(
                    _restored(entity, self._offset + start, self._offset + end)
                )
        self._offset += cut
        return restore(region, self._vault)


def _restored(entity: str, start: int, end: int) -> Finding:
    return Finding("pii", entity, start, end, 1.0, "restored")
