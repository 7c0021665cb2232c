"""What happens to a detected entity: redact, mask, hash, pseudonymize or block.

    redact        <EMAIL_ADDRESS>
    mask          ************1111            (keeps the last `mask_keep` characters)
    hash          <EMAIL_ADDRESS:1a2b3c4d5e6f> keyed BLAKE2b under the tenant secret
    pseudonymize  <EMAIL_ADDRESS_7f3a9c>       same value → same placeholder for one
                                               tenant; recorded in `ctx.vault` so the
                                               answer can be restored
    block         raise Blocked("pii", "prompt contains EMAIL_ADDRESS")

Placeholders are derived with keyed BLAKE2b (a MAC: BLAKE2's own keyed mode, one call
instead of HMAC's two hash passes) of entity + value under the tenant secret: stable across the
turns of a conversation without storing values anywhere, different per tenant, and
`restore` only resolves placeholders recorded in this request's own vault, so a
placeholder can never turn into another request's or another tenant's value.
Findings carry entity, offsets, score and action, never the value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from rails.base import Blocked, Finding, GuardContext, Stage
from rails.pii.options import Action, PiiOptions
from rails.pii.spans import Span, resolve_overlaps

__all__ = [
    "MAX_PLACEHOLDER",
    "PLACEHOLDER",
    "apply_actions",
    "placeholder_for",
    "restore",
    "restore_spans",
]

GUARD = "pii"
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]{0,47})_([0-9a-f]{6,16})>")
"""Shape of a pseudonym placeholder: `<ENTITY_hex>`."""
MAX_PLACEHOLDER = 1 + 48 + 1 + 16 + 1
_PAST = {
    "redact": "redacted",
    "mask": "masked",
    "hash": "hashed",
    "pseudonymize": "pseudonymized",
    "block": "blocked",
}
_NOUN: dict[Stage, str] = {"input": "prompt", "output": "answer"}
_MAX_KEY = hashlib.blake2b.MAX_KEY_SIZE


def apply_actions(
    text: str,
    spans: Sequence[Span],
    options: PiiOptions,
    ctx: GuardContext,
    stage: Stage,
    *,
    shadow: bool = False,
    offset: int = 0,
) -> str:
    """Rewrite `text` per the options' actions and record one finding per span.

    `offset` is added to finding positions (a stream filter passes the position of
    `text` in the whole answer). In `shadow` mode findings say `reported` and the
    text comes back unchanged. Raises `Blocked` (after recording the blocking
    findings) if any span's action is `block`.
    """
    if not spans:
        return text
    spans = resolve_overlaps(spans)
    actions = [options.actions.get(s.entity, options.action) for s in spans]
    if shadow:
        ctx.findings += [_finding(s, "reported", offset) for s in spans]
        return text
    blocking = [s for s, a in zip(spans, actions, strict=True) if a == "block"]
    if blocking:
        ctx.findings += [_finding(s, "blocked", offset) for s in blocking]
        entities = ", ".join(sorted({s.entity for s in blocking}))
        raise Blocked(GUARD, f"{_NOUN[stage]} contains {entities}")
    out: list[str] = []
    done: dict[tuple[str, str, str], str] = {}  # a value repeated in the text: one MAC
    pos = 0
    for span, action in zip(spans, actions, strict=True):
        value = text[span.start : span.end]
        key = (span.entity, value, action)
        replacement = done.get(key)
        if replacement is None:
            replacement = done[key] = _replacement(span, value, action, options, ctx, stage)
        out += (text[pos : span.start], replacement)
        pos = span.end
    out.append(text[pos:])
    ctx.findings += [_finding(s, _PAST[a], offset) for s, a in zip(spans, actions, strict=True)]
    return "".join(out)


def placeholder_for(entity: str, value: str, ctx: GuardContext) -> str:
    """The pseudonym of `value` for this tenant, recorded in `ctx.vault`.

    Six hex digits (24 bits) keep placeholders short for the model; on a collision
    with a different value already in this request's vault the digest is lengthened.
    """
    digest = _keyed(ctx.tenant_secret, b"pseudonym", entity, value)
    for length in range(6, 17, 2):
        placeholder = f"<{entity}_{digest[:length]}>"
        if ctx.vault.setdefault(placeholder, value) == value:
            return placeholder
    raise RuntimeError("pseudonym collision beyond 64 bits")  # pragma: no cover


def restore(text: str, vault: dict[str, str]) -> str:
    """Replace this request's placeholders in `text` by their original values.

    Placeholder-shaped text that is not in `vault` stays as it is.
    """
    if not vault or "<" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: vault.get(m.group(), m.group()), text)


def restore_spans(text: str, vault: dict[str, str]) -> list[tuple[int, int, str]]:
    """`(start, end, entity)` of each placeholder of `vault` in `text`."""
    if not vault or "<" not in text:
        return []
    return [
        (m.start(), m.end(), m.group(1)) for m in PLACEHOLDER.finditer(text) if m.group() in vault
    ]


def _replacement(
    span: Span, value: str, action: Action, options: PiiOptions, ctx: GuardContext, stage: Stage
) -> str:
    entity = span.entity
    match action:
        case "mask":
            keep = options.mask_keep if len(value) > options.mask_keep else 0
            return "*" * (len(value) - keep) + value[len(value) - keep :]
        case "hash":
            return f"<{entity}:{_keyed(ctx.tenant_secret, b'hash', entity, value)[:12]}>"
        case "pseudonymize" if stage == "input":
            return placeholder_for(entity, value, ctx)
        case "pseudonymize":
            # In an answer there is nothing to restore later: a placeholder the user
            # sees, not recorded (else the restore step would put the value back).
            return f"<{entity}_{_keyed(ctx.tenant_secret, b'pseudonym', entity, value)[:6]}>"
        case _:
            return f"<{entity}>"


def _keyed(secret: bytes, purpose: bytes, entity: str, value: str) -> str:
    """Keyed BLAKE2b-128 of entity and value under `secret`, `purpose` as its
    personalization (domain separation between hashes and pseudonyms), in hex.

    Tenant secrets are 32 bytes; a longer one is first hashed to BLAKE2b's 64-byte key
    limit. ~0.9 us per call here against ~2.8 us for a copied HMAC-SHA256 object.
    """
    if len(secret) > _MAX_KEY:
        secret = hashlib.blake2b(secret).digest()
    message = b"\x00".join((entity.encode(), value.encode("utf-8", "surrogatepass")))
    return hashlib.blake2b(message, key=secret, digest_size=16, person=purpose).hexdigest()


def _finding(span: Span, action: str, offset: int) -> Finding:
    return Finding(GUARD, span.entity, span.start + offset, span.end + offset, span.score, action)
