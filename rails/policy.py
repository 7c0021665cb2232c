"""Tenant policy: which guards run on a call's input and output, and how a block looks.

    on_block: error              # or refuse: a normal answer carrying `refusal`
    refusal: "I can't help with that request."
    roles: [system, developer, user, assistant, tool, function]
    input:                       # in order, on everything going to the provider
      - pii: {entities: [EMAIL_ADDRESS], action: pseudonymize}
        shadow: false            # report only, change nothing
        on_error: block          # or allow: what a failing or slow guard does
        timeout_ms: 1000
      - denylist: {terms: [project falcon]}
    output:                      # in order, on the answer
      - pii: {entities: [CREDIT_CARD], action: redact}

Each guard entry has exactly one kind key (see `rails.registry.KINDS`) plus the common
keys. `parse_policy` reports every problem at once, each with its JSON path, so an admin
API or `railgate config validate` can show them all; it also runs each kind's parse-time
checks (regexes compile, limits), so a policy that parses can be built.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import yaml

from rails.pipeline import OnError
from rails.registry import KINDS, GuardKind

__all__ = [
    "DEFAULT_POLICY",
    "ROLES",
    "GuardSpec",
    "OnBlock",
    "Policy",
    "PolicyError",
    "Role",
    "dump_policy",
    "parse_policy",
    "policy_from_yaml",
]

OnBlock = Literal["error", "refuse"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: tuple[Role, ...] = ("system", "developer", "user", "assistant", "tool", "function")
TimeoutMs = Annotated[int, msgspec.Meta(ge=1, le=60_000)]
Problems = list[tuple[str, str]]


class PolicyError(ValueError):
    """A policy document is invalid; `problems` lists every `(json_path, reason)`."""

    def __init__(self, problems: Problems) -> None:
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))
        self.problems = problems


class GuardSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One guard entry of a stage, parsed."""

    kind: str
    """Policy key of the guard kind, e.g. `pii`."""
    options: msgspec.Struct
    """The kind's options struct (`PiiOptions`, `DenylistOptions`, …)."""
    shadow: bool = False
    """Report only: never change a text, never block."""
    on_error: OnError = "block"
    """What an error or timeout of this guard does: fail the call, or skip the guard."""
    timeout_ms: TimeoutMs = 1000
    """Deadline for this guard's pass over the texts of one stage."""


class _Common(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    shadow: bool = False
    on_error: OnError = "block"
    timeout_ms: TimeoutMs = 1000


_COMMON_KEYS = frozenset(f.encode_name for f in msgspec.structs.fields(_Common))


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, weakref=True):
    """A tenant's rails: parse with `parse_policy`, run through `GuardRegistry.pipeline`."""

    on_block: OnBlock = "error"
    """`error`: a blocked prompt is a 400 `content_filter`; `refuse`: a normal answer."""
    refusal: Annotated[str, msgspec.Meta(min_length=1)] = "I can't help with that request."
    """Answer text when `on_block: refuse`."""
    roles: tuple[Role, ...] = ROLES
    """Chat roles whose message content the input stage checks."""
    input: tuple[GuardSpec, ...] = ()
    """Guards run in order on everything going to the provider."""
    output: tuple[GuardSpec, ...] = ()
    """Guards run in order on the answer, before pseudonyms are restored."""


DEFAULT_POLICY = Policy()
"""No guards: what a tenant without a policy (and no configured default) gets."""

_STAGES = ("input", "output")


def parse_policy(data: Any, *, kinds: Mapping[str, GuardKind[Any]] = KINDS) -> Policy:
    """Validate a decoded YAML/JSON document into a `Policy`.

    Raises `PolicyError` listing every problem, e.g.
    `("$.input[0].pii.action", "Expected one of 'redact', …, got 'erase'")`.
    """
    problems: Problems = []
    if not isinstance(data, dict):
        raise PolicyError([("$", f"Expected `object`, got `{_json_type(data)}`")])
    fields_in: dict[str, Any] = {}
    fields = {f.encode_name: f for f in msgspec.structs.fields(Policy)}
    for key, value in data.items():
        path = _at("$", key)
        if key in _STAGES:
            fields_in[key] = _parse_stage(value, path, kinds, problems)
        elif key in fields:
            if _check(value, fields[key].type, path, problems):
                fields_in[key] = msgspec.convert(value, fields[key].type)
        else:
            problems.append((path, "Unknown field"))
    if problems:
        raise PolicyError(problems)
    return Policy(**fields_in)


def policy_from_yaml(text: str, *, kinds: Mapping[str, GuardKind[Any]] = KINDS) -> Policy:
    """Parse a YAML (or JSON) policy document; an empty document is `DEFAULT_POLICY`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError([("$", f"Invalid YAML: {reason}{where}")]) from None
    return parse_policy({} if data is None else data, kinds=kinds)


def dump_policy(policy: Policy) -> dict[str, Any]:
    """The policy as a JSON-native document `parse_policy` accepts (admin API, round trips)."""
    doc: dict[str, Any] = {
        "on_block": policy.on_block,
        "refusal": policy.refusal,
        "roles": list(policy.roles),
    }
    for stage in _STAGES:
        doc[stage] = [
            {
                spec.kind: msgspec.json.decode(msgspec.json.encode(spec.options)),
                "shadow": spec.shadow,
                "on_error": spec.on_error,
                "timeout_ms": spec.timeout_ms,
            }
            for spec in getattr(policy, stage)
        ]
    return doc


def _parse_stage(
    value: Any, path: str, kinds: Mapping[str, GuardKind[Any]], problems: Problems
) -> tuple[GuardSpec, ...]:
    if not isinstance(value, list | tuple):
        problems.append((path, f"Expected `array`, got `{_json_type(value)}`"))
        return ()
    specs = (_parse_guard(item, f"{path}[{i}]", kinds, problems) for i, item in enumerate(value))
    return tuple(s for s in specs if s is not None)


def _parse_guard(
    item: Any, path: str, kinds: Mapping[str, GuardKind[Any]], problems: Problems
) -> GuardSpec | None:
    if not isinstance(item, dict):
        problems.append((path, f"Expected `object`, got `{_json_type(item)}`"))
        return None
    known = ", ".join(sorted(kinds))
    named = [k for k in item if k not in _COMMON_KEYS]
    for key in named:
        if key not in kinds:
            problems.append((_at(path, key), f"Unknown guard kind; expected one of: {known}"))
    found = [k for k in named if k in kinds]
    if len(found) != 1:
        if not found and not named:
            problems.append((path, f"Missing guard kind; expected one of: {known}"))
        elif len(found) > 1:
            problems.append((path, f"Expected exactly one guard kind, got: {', '.join(found)}"))
        return None
    kind_name = found[0]
    kind = kinds[kind_name]
    common = {k: v for k, v in item.items() if k in _COMMON_KEYS}
    common_ok = _check(common, _Common, path, problems)
    where = _at(path, kind_name)
    raw = {} if item[kind_name] is None else item[kind_name]
    if not _check(raw, kind.options, where, problems):
        return None
    options = msgspec.convert(raw, kind.options)
    extra = [(where + rel, reason) for rel, reason in kind.problems(options)]
    problems.extend(extra)
    if extra or not common_ok:
        return None
    c = msgspec.convert(common, _Common)
    return GuardSpec(kind_name, options, c.shadow, c.on_error, c.timeout_ms)


def _check(value: Any, tp: Any, path: str, problems: Problems) -> bool:
    """Append every problem of `value` as a `tp` (recursing into structs, arrays, maps,
    literals and optionals; msgspec's first error elsewhere). True when there were none."""
    before = len(problems)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if not isinstance(value, dict):
            problems.append((path, f"Expected `object`, got `{_json_type(value)}`"))
            return False
        fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
        for key, item in value.items():
            if key in fields:
                _check(item, fields[key].type, _at(path, key), problems)
            else:
                problems.append((_at(path, key), "Unknown field"))
        for name, f in fields.items():
            if f.required and name not in value:
                problems.append((_at(path, name), "Missing required field"))
    elif origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            expected = ", ".join(repr(a) for a in args)
            problems.append((path, f"Expected one of {expected}, got {_short(value)}"))
    elif origin in (list, tuple) and (origin is list or args[1:] == (...,)):
        if not isinstance(value, list | tuple):
            problems.append((path, f"Expected `array`, got `{_json_type(value)}`"))
            return False
        for i, item in enumerate(value):
            _check(item, args[0], f"{path}[{i}]", problems)
    elif origin is dict:
        if not isinstance(value, dict):
            problems.append((path, f"Expected `object`, got `{_json_type(value)}`"))
            return False
        for key, item in value.items():
            _check(key, args[0], _at(path, key), problems)
            _check(item, args[1], _at(path, key), problems)
    elif _is_optional(origin, args) and value is not None:
        _check(value, next(a for a in args if a is not type(None)), path, problems)
    if len(problems) == before:
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError as exc:
            message, _, at = str(exc).rpartition(" - at `$")
            problems.append((path + at.rstrip("`"), message) if message else (path, str(exc)))
    return len(problems) == before


def _is_optional(origin: Any, args: tuple[Any, ...]) -> bool:
    return origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args


def _at(path: str, key: Any) -> str:
    return f"{path}.{key}" if isinstance(key, str) and key.isidentifier() else f"{path}[{key!r}]"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return {int: "int", float: "float", str: "str"}.get(type(value), type(value).__name__)
