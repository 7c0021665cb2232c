"""Jailbreak and prompt-injection heuristics: an input rail that calls no model.

The user message is normalised first, so that simple obfuscation does not pass: NFKC
(fullwidth and styled letters become ASCII), Unicode tag characters ("ASCII smuggling")
are made visible, zero-width and other invisible characters are removed, the text is
case-folded, accents are stripped, common Cyrillic/Greek look-alike letters become Latin,
and runs of whitespace are collapsed (newlines are kept, as one). The rules then run on
that text, on a copy with leetspeak digits turned back into letters (when the text has
any), and on a copy where letter-spaced words (`i g n o r e`) are joined (when it has
any). Long base64 runs are decoded and, when they are text, checked too.

The rules look for phrasings directed at the assistant ("ignore all previous
instructions", "you are now DAN", "reveal your system prompt") rather than for single
words, to keep false positives low on ordinary text ("please ignore the typo", "the
previous instructions in the manual say ...", "how do I enable developer mode on my
phone?"). Rule names: see `RULES`, plus `fake_role_turn`, `special_tokens`, `base64` and
`extra_patterns`.

Parameters (`custom_data`, all optional):

- `extra_patterns`: regular expressions (`regex` module syntax, case-insensitive),
  searched in the normalised text; a match blocks.
- `disabled_rules`: names of built-in rules to switch off.
- `base64_min_length`: shortest base64 run that is decoded and checked (default 40).
- `special_token_threshold`: how many chat-template special tokens (`<|im_start|>`,
  `[INST]`, ...) block a message (default 3); a forged system or assistant turn
  (`<|im_start|>system`) blocks at once.

The outcome names the rule only: the message text is never logged or returned.
"""

import base64
import binascii
import functools
import itertools
import logging
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import regex
from nemoguardrails.actions import action
from nemoguardrails.actions.rail_outcome import RailOutcome

from rails.nemo.params import strings, text_of

log = logging.getLogger(__name__)

DEFAULT_BASE64_MIN_LENGTH = 40
DEFAULT_SPECIAL_TOKEN_THRESHOLD = 3
MAX_PATTERN_CHARS = 1000
REGEX_TIMEOUT_S = 0.05
"""Time limit of one `extra_patterns` search (a pathological pattern fails the rail)."""
MAX_BASE64_BLOBS = 16
MAX_BASE64_DEPTH = 2

# --------------------------------------------------------------------------- normalising

_TAG_RUN = re.compile("[\U000e0020-\U000e007e]+")
"""Unicode tag characters carry invisible ASCII: they are turned into it, as a word."""
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]"
)
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_LOOKALIKES = str.maketrans(
    # Cyrillic, Greek and Latin look-alikes of ASCII letters, then quote marks (escaped:
    # the characters themselves are indistinguishable here).
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445\u0456\u0458"
    "\u0455\u0501\u051b\u051d\u04cf\u0475"
    "\u03b1\u03b2\u03b5\u03b7\u03b9\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7\u03f2"
    "\u0131\u0269\u0261"
    "\u02bc\u2018\u2019\u201a\u2032\u201c\u201d\u201e",
    "abekmhopctyxijsdqwlvabenikvoptuxciig'''''\"\"\"",
)
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_HAS_LEET = re.compile(r"[a-z][0-9@$]|[0-9@$][a-z]")
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")
_LETTER_SPACED = re.compile(r"\b[^\W_](?:[ .\-_*/|,+~][^\W_](?![^\W_])){2,}")
"""Three or more single letters, each pair separated by one character: `i g n o r e`."""
_LETTER_SEPARATORS = re.compile(r"[ .\-_*/|,+~]")
_NON_ALNUM = re.compile(r"[\W_]+")


def visible(text: str) -> str:
    """NFKC, tag characters made visible, invisible characters removed (case kept)."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        text = _TAG_RUN.sub(
            lambda m: " " + "".join(chr(ord(c) - 0xE0000) for c in m.group()) + " ", text
        )
        text = _INVISIBLE.sub("", text)
    return text


def normalise(seen: str) -> str:
    """The matching form of a `visible` text: case-folded, unaccented, de-confused, with
    runs of spaces (and of newlines) collapsed."""
    text = seen.casefold()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
        text = text.translate(_LOOKALIKES)
    text = _SPACES.sub(" ", text)
    return _NEWLINES.sub("\n", text).strip()


def views(norm: str) -> tuple[list[str], str | None]:
    """The texts the rules run on, and the compact (letters only) text for `COMPACT`.

    The compact text exists only when the message letter-spaces words: joining all the
    words of an ordinary text would invent phrases."""
    out = [norm]
    if _HAS_LEET.search(norm):
        out.append(norm.translate(_LEET))
    compact = None
    if _LETTER_SPACED.search(norm):
        despaced = _LETTER_SPACED.sub(lambda m: _LETTER_SEPARATORS.sub("", m.group()), norm)
        out.append(despaced)
        compact = _NON_ALNUM.sub("", despaced.translate(_LEET))
    return out, compact


# --------------------------------------------------------------------------- rules

_GAP = r"[\W_]+"
_WORD = r"[^\W_]+"


def _template(template: str) -> str:
    """Expand a rule template: a space means a gap of non-letters (spaces, punctuation,
    newlines) and `<wN>` up to N filler words."""
    return re.sub(r"<w(\d+)>", lambda m: f"(?:{_GAP}{_WORD}){{0,{m.group(1)}}}?", template).replace(
        " ", _GAP
    )


_NOT = r"(?<!not\s)(?<!n't\s)(?<!never\s)"
"""Not after a negation (`don't forget your safety training`); no spaces: see `_template`."""
_DET = r"(?:all|any|the|your|these|those|every|each|of|its|this)"
_QUAL = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|former|original|initial|system|"
    r"developer|hidden|programmed|your)"
)
"""What makes `ignore ... instructions` about the assistant's instructions: `ignore the
previous instructions`, `forget your rules`, but not `ignore safety guidelines`."""
_ADJ = rf"(?:{_QUAL[3:-1]}|safety|ethical|moral|content|default|usage|core|built in|openai)"
_NOUN = (
    r"(?:instructions?|prompts?|rules|directives?|directions|guidelines|guardrails|"
    r"constraints|restrictions|programming|policies|filters|safeguards|limitations|training)"
)
_FREEDOM = (
    r"(?:restrictions|limitations|filters?|rules|guidelines|guardrails|censorship|"
    r"constraints|morals|morality|ethics|ethical \w+|moral \w+|safety \w+|"
    r"content polic(?:y|ies)|programming)"
)
_NOT_ORDINARY = r"(?! (?:on|for|about|regarding|of|in|around|when|if)\b)"
"""`... no restrictions on shipping`, `... bound by the rules of the contract`."""
_ENABLE_MODE = (
    r"(?:sudo|dan|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|opposite|"
    r"no restrictions?|no filters?)"
)
"""Modes one enters by asking (`god mode` and `evil mode` are games and an Emacs mode)."""
_IN_MODE = rf"(?:{_ENABLE_MODE[3:-1]}|god|evil|chaos|developer|unlocked)"
_REVEAL = (
    r"(?:reveal|show|print|display|output|repeat|recite|tell|give|share|leak|dump|expose|"
    r"provide|send|list|write out|spell out|paste|copy|return|echo|what (?:is|are|was|were)|"
    r"what s)"
)
_REVEAL_THE = (
    r"(?:reveal|show|print|display|output|repeat|recite|leak|dump|expose|paste|echo|"
    r"spell out|write out)"
)
_PROMPT = r"(?:prompts?|instructions?|directives?|rules|guidelines)"
_SECRET_PROMPT = (
    r"(?:system (?:prompt|message|instructions?|directives?)|(?:hidden|secret|confidential) "
    rf"{_PROMPT}|developer (?:prompt|message)|pre ?prompt|meta ?prompt)"
)
"""Unambiguous names of the prompt (`show me the original instructions` is a manual)."""
_YOUR_PROMPT = (
    rf"(?:{_SECRET_PROMPT}|(?:initial|original|internal|developer) {_PROMPT}|system rules)"
)

RULES: dict[str, tuple[str, ...]] = {
    "ignore_instructions": (
        rf"{_NOT}(?:ignore|disregard|forget|override|overrule|bypass|circumvent|discard|"
        rf"abandon|throw out|set aside) (?!my\b)(?:{_DET} )*?{_QUAL} (?:{_ADJ} )?{_NOUN}\b",
    ),
    "dan": (
        r"do anything now\b",
        r"(?:dan|stan) mode\b",
        r"you (?:are|re|will be|shall be|must be) (?:now|henceforth|from now on) "
        r"(?:a |an |the )?(?:jailbroken|unfiltered|uncensored|unrestricted|unchained|unbound|"
        r"evil)\b",
        r"you (?:are|re) (?:a |an )?(?:jailbroken|unfiltered|uncensored|unchained)\b",
    ),
    "developer_mode": (
        r"(?:enable|activate|enter|engage|switch to|switch into|turn on|unlock|go into|"
        rf"simulate)(?: the)? {_ENABLE_MODE} mode\b",
        rf"you (?:are|re)(?: now)? in(?: the)? {_IN_MODE} mode\b",
        r"you (?:will|shall|must|should|can)(?: now)?(?: be)?"
        r"(?: acting| act| operating| operate| running| run)? (?:in|with) (?:the )?"
        r"developer mode\b",
        r"(?:simulate|emulate) (?:the |a )?developer mode\b",
        r"(?:chatgpt|assistant|ai|model|gpt|llm|claude|gemini|llama|bot) with (?:the )?"
        r"(?:developer|dev|god|sudo|dan|jailbreak) mode\b",
        r"(?:developer|dev|god|sudo|dan|jailbreak) mode (?:output|response|activated|unlocked)\b",
    ),
    "no_restrictions": (
        r"(?:pretend|act|behave|roleplay|role play|respond|answer|reply)<w4> you "
        r"(?:are|were|have|had) (?:no|zero|without|free of|free from|not bound by|unbound by|"
        rf"released from|no longer bound by)<w2> {_FREEDOM}\b{_NOT_ORDINARY}",
        r"you (?:now )?(?:have no|don t have any|do not have any|no longer have(?: any)?|"
        r"are free of|are free from|are not bound by|are no longer bound by|aren t bound by|"
        rf"are released from|are unbound by)(?: any| all| your| the)?<w1> {_FREEDOM}\b"
        rf"{_NOT_ORDINARY}",
        r"(?:you are|you re|act as|pretend to be|become|play|roleplay as|respond as|"
        r"answer as)(?: now)?(?: a| an)?<w3> (?:ai|assistant|model|chatbot|bot|llm|"
        r"character|persona|entity|version of yourself)<w1> (?:with no|without(?: any)?|"
        rf"that has no|free of|free from|not bound by)<w2> {_FREEDOM}\b",
    ),
    "reveal_system_prompt": (
        rf"{_REVEAL}<w3> your<w2> {_YOUR_PROMPT}\b",
        rf"{_REVEAL_THE}<w3> the<w1> {_SECRET_PROMPT}\b",
        r"your (?:\w+ )?(?:instructions|prompt|rules|directives) (?:verbatim|word for word|"
        r"exactly as (?:written|given)|in full|in a code ?block)\b",
        r"(?:repeat|print|output|recite|reproduce|copy|write)(?: all(?: of)?)?(?: the)? "
        r"(?:words|text|everything|content|instructions|messages?) (?:above|before this|"
        r"before my)<w4> (?:starting|beginning|verbatim|word for word|including|"
        r"in a code ?block)",
    ),
    "roleplay_bypass": (
        r"(?:bypass|circumvent|get around|evade|disable|turn off|switch off|deactivate|"
        r"escape|jailbreak)<w1> (?:your|openai s|anthropic s)<w2> (?:filters?|guidelines|"
        r"guardrails|safety|safeguards|censorship|content polic(?:y|ies)|usage polic(?:y|ies)|"
        r"alignment|moderation|restrictions|rules|programming|training)\b",
        r"(?:pretend|roleplay|role play|act as|imagine|hypothetically|in this (?:story|game|"
        r"scenario)|for this (?:story|game|scenario))<w12> (?:bypass|circumvent|get around|"
        r"evade|disable|ignore|without)<w1> (?:the|any|all|your)<w2> (?:filters?|guidelines|"
        r"guardrails|safety \w+|safeguards|censorship|content polic(?:y|ies)|restrictions)\b",
        r"you (?:will|must|shall|should|can|may)? ?(?:never|no longer|not ever) "
        r"(?:refuse|decline|reject|deny|say no)\b",
        r"(?:always|must) (?:answer|respond|comply|reply)<w3> (?:no matter how|even if "
        r"(?:it is|it s)) (?:illegal|unethical|harmful|dangerous|immoral|offensive|inappropriate)",
    ),
}
"""Word-anchored rules (templates, see `_template`), searched in every view."""

LINE_RULES: dict[str, tuple[str, ...]] = {
    "fake_role_turn": (
        # `SYSTEM: you are now ...`, `[admin override]: ignore ...`
        r"(?m)^[ \t>*#\[(-]*(?:system|admin|administrator|developer|root|sudo)"
        r"(?: ?(?:prompt|message|note|override|instructions?|command))?[ \t\])*]*:[ \t]*"
        r"(?:ignore|disregard|forget|override|you (?:are|must|will|should|shall)|"
        r"new (?:instructions|rules)|from now on|the (?:assistant|ai|model) (?:must|will|"
        r"should|is))",
        r"\[system\]\(#\w+\)",
        # a markdown heading that claims authority
        r"(?m)^[ \t]*#{1,6}[ \t]*(?:new |updated |real |actual )?(?:system prompt|"
        r"system message|system instructions?|system override|admin(?:istrator)? override|"
        r"admin(?:istrator)? instructions?|developer override|developer instructions?|"
        r"override|new instructions?|updated instructions?|jailbreak)[ \t]*:?[ \t]*$",
        # an Alpaca-style `### Instruction:` ... `### Response:` turn
        r"(?ms)^[ \t]*#{2,}[ \t]*instruction[ \t]*:?[ \t]*$.*?"
        r"^[ \t]*#{2,}[ \t]*(?:response|assistant|output)[ \t]*:?[ \t]*$",
    ),
}
"""Line-oriented rules, searched in the normalised text only."""

CASED_RULES: dict[str, re.Pattern[str]] = {
    "dan": re.compile(
        r"\b(?i:act|acting|pretend|pretending|roleplay|role[\W_]*play|behave|respond|answer|"
        r"be|stay|remain|you[\W_]+are|you[\W_]*'?re|you[\W_]+will[\W_]+be)"
        r"(?:[\W_]+(?i:now|henceforth|as|like|to[\W_]+be))*[\W_]+(?:(?i:a|an|the)[\W_]+)?"
        r"(?:DAN|STAN|DUDE)\b"
    ),
}
"""Rules that need the case the user wrote: `act as DAN` is a jailbreak, `act as Dan, a
sales manager` is not."""

COMPACT: dict[str, re.Pattern[str]] = {
    "ignore_instructions": re.compile(
        r"(?:ignore|disregard|forget|override|bypass)(?:all|any|the|your|of|these)*"
        r"(?:previous|prior|above|earlier|preceding|system|your|all)"
        r"(?:instructions?|prompts?|rules|directives|guidelines)"
    ),
    "dan": re.compile(
        r"doanythingnow|(?:youarenow|youre|actas)(?:a|an)?(?:dan|jailbroken|unfiltered)"
    ),
    "developer_mode": re.compile(r"(?:developer|sudo|god|dan|jailbreak)mode"),
    "no_restrictions": re.compile(
        r"(?:youhaveno|withoutany|nolonger)(?:restrictions|filters|rules|guidelines)"
    ),
    "reveal_system_prompt": re.compile(
        r"(?:reveal|show|print|display|repeat|tell|output|whatis)\w{0,20}?"
        r"(?:system|hidden|secret|initial)(?:prompt|instructions|message)"
    ),
}
"""Rules for letter-spaced text, run on its letters only (`ignoreallpreviousinstructions`)."""

BUILTIN = (*RULES, *LINE_RULES, *CASED_RULES, "special_tokens", "base64")
"""Every built-in rule name (for `disabled_rules`)."""

_SPECIAL_TOKEN = re.compile(
    r"<\|[a-z_]{2,30}\|>|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>|</?(?:bos|eos)>"
)
_FORGED_TURN = re.compile(
    r"<\|(?:im_start|start_header_id)\|>\s*(?:system|assistant|developer)|"
    r"<\|(?:system|assistant|developer)\|>|<<sys>>|<start_of_turn>\s*model"
)
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_FOLLOW_CUE = re.compile(
    r"\b(?:follow|obey|execute|carry out|comply with|act on|perform|do (?:what|as) it says|"
    r"instructions?)\b"
)


@functools.lru_cache(maxsize=16)
def _rules_regex(disabled: frozenset[str]) -> re.Pattern[str] | None:
    """All enabled word-anchored rules as one regex, a named group per rule.

    One scan of the text, anchored at word starts, instead of one per pattern;
    `Match.lastgroup` names the rule (templates use no capturing groups)."""
    groups = [
        f"(?P<{name}>" + "|".join(f"(?:{_template(t)})" for t in templates) + ")"
        for name, templates in RULES.items()
        if name not in disabled
    ]
    return re.compile(r"\b(?:" + "|".join(groups) + ")") if groups else None


@functools.lru_cache(maxsize=16)
def _line_rules(disabled: frozenset[str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple(
        (name, re.compile(t))
        for name, templates in LINE_RULES.items()
        if name not in disabled
        for t in templates
    )


# --------------------------------------------------------------------------- parameters


class Settings:
    """The parsed parameters of one configuration (built once per distinct value)."""

    __slots__ = ("base64_min_length", "disabled", "extra", "line_rules", "rules", "special_tokens")

    def __init__(
        self,
        extra: tuple[str, ...],
        disabled: frozenset[str],
        base64_min_length: int,
        special_token_threshold: int,
    ) -> None:
        unknown = disabled - set(BUILTIN)
        if unknown:
            raise ValueError(f"disabled_rules: unknown rule(s) {sorted(unknown)}")
        self.extra = tuple(_compile_extra(p) for p in extra)
        self.disabled = disabled
        self.rules = _rules_regex(disabled)
        self.line_rules = _line_rules(disabled)
        self.base64_min_length = base64_min_length
        self.special_tokens = special_token_threshold


def _compile_extra(pattern: str) -> regex.Pattern[str]:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"extra_patterns: pattern longer than {MAX_PATTERN_CHARS} characters")
    try:
        compiled = regex.compile(pattern, regex.IGNORECASE)
    except regex.error as exc:
        raise ValueError(f"extra_patterns: invalid regular expression: {exc}") from None
    if compiled.fullmatch("", timeout=REGEX_TIMEOUT_S) is not None:
        raise ValueError("extra_patterns: pattern matches the empty string")
    return compiled


def _int(data: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}: expected an integer >= {minimum}")
    return value


@functools.lru_cache(maxsize=64)
def _settings(extra: tuple[str, ...], disabled: frozenset[str], b64: int, special: int) -> Settings:
    return Settings(extra, disabled, b64, special)


def settings_of(custom_data: Mapping[str, Any] | None) -> Settings:
    """The settings for a config's `custom_data` (raises `ValueError`/`TypeError`)."""
    data = custom_data or {}
    return _settings(
        strings(data, "extra_patterns"),
        frozenset(strings(data, "disabled_rules")),
        _int(data, "base64_min_length", DEFAULT_BASE64_MIN_LENGTH, 16),
        _int(data, "special_token_threshold", DEFAULT_SPECIAL_TOKEN_THRESHOLD, 1),
    )


# --------------------------------------------------------------------------- detection


def _special_tokens(norm: str, threshold: int) -> bool:
    if _FORGED_TURN.search(norm):
        return True
    nth = itertools.islice(_SPECIAL_TOKEN.finditer(norm), threshold - 1, None)
    return next(nth, None) is not None


def _decode_base64(blob: str) -> str | None:
    """The text a base64 run decodes to, or None if it is not (mostly printable) text."""
    blob = blob.rstrip("=")
    if "-" in blob or "_" in blob:
        if "+" in blob or "/" in blob:
            return None
        blob = blob.replace("-", "+").replace("_", "/")
    if len(blob) % 4 == 1:
        blob = blob[:-1]
    blob += "=" * (-len(blob) % 4)
    try:
        text = base64.b64decode(blob, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not text:
        return None
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\n\r\t")
    return text if printable / len(text) >= 0.95 else None


def _prose(text: str) -> bool:
    """Looks like words (instructions), not data."""
    letters = sum(1 for ch in text if ch.isalpha() or ch == " ")
    return len(text.split()) >= 4 and letters / len(text) >= 0.75


def detect(text: str, settings: Settings, depth: int = 0) -> str | None:
    """The name of the first rule the text breaks, or None."""
    seen = visible(text)
    norm = normalise(seen)
    texts, compact = views(norm)
    if settings.rules is not None:
        for view in texts:
            m = settings.rules.search(view)
            if m is not None and m.lastgroup:
                return m.lastgroup
    if compact is not None:
        for name, pattern in COMPACT.items():
            if name not in settings.disabled and pattern.search(compact):
                return name
    for name, pattern in settings.line_rules:
        if pattern.search(norm):
            return name
    for name, pattern in CASED_RULES.items():
        if name not in settings.disabled and pattern.search(seen):
            return name
    if "special_tokens" not in settings.disabled and _special_tokens(norm, settings.special_tokens):
        return "special_tokens"
    for extra in settings.extra:
        if extra.search(norm, timeout=REGEX_TIMEOUT_S):
            return "extra_patterns"
    if "base64" not in settings.disabled and depth < MAX_BASE64_DEPTH:
        blobs = (
            m.group()
            for m in _BASE64.finditer(seen)
            if len(m.group()) - m.group().count("=") >= settings.base64_min_length
        )
        for i, blob in enumerate(blobs):
            if i >= MAX_BASE64_BLOBS:
                break
            decoded = _decode_base64(blob)
            if decoded is None:
                continue
            if detect(decoded, settings, depth + 1) is not None:
                return "base64"
            if _prose(decoded) and _FOLLOW_CUE.search(norm):
                return "base64"
    return None


# --------------------------------------------------------------------------- the action


def _custom_data(config: Any) -> Mapping[str, Any]:
    data = getattr(config, "custom_data", None)
    return data if isinstance(data, Mapping) else {}


@action(is_system_action=True, name="jailbreak_heuristics_check")  # type: ignore[untyped-decorator]
async def jailbreak_heuristics_check(
    context: dict[str, Any] | None = None,
    config: Any = None,
    user_message: str | None = None,
    **kwargs: Any,
) -> RailOutcome:
    """Block the user message if it looks like a jailbreak or a prompt injection."""
    settings = settings_of(_custom_data(config))
    message = user_message if user_message is not None else (context or {}).get("user_message")
    text = text_of(message)
    if not text:
        return RailOutcome.allow()
    rule = detect(text, settings)
    if rule is None:
        return RailOutcome.allow()
    log.info("jailbreak heuristics: blocked by rule %s", rule)
    return RailOutcome.block(
        reason=f"Looks like a jailbreak or prompt injection (rule: {rule}).",
        metadata={"rule": rule},
    )
