"""Policy parsing: the schema, defaults, and every problem reported with its JSON path."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import yaml

from rails.denylist import DenylistOptions
from rails.pii.options import CustomRecognizer, PiiOptions
from rails.policy import (
    DEFAULT_POLICY,
    ROLES,
    GuardSpec,
    Policy,
    PolicyError,
    dump_policy,
    parse_policy,
    policy_from_yaml,
)
from rails.registry import KINDS, GuardKind

EXAMPLE = """
on_block: refuse
refusal: "No."
roles: [user, tool]
input:
  - pii: {entities: [EMAIL_ADDRESS, PHONE_NUMBER], action: pseudonymize, score_threshold: 0.5}
    shadow: true
    on_error: allow
    timeout_ms: 250
  - denylist: {terms: [falcon], patterns: ['ORDER-\\d{4}']}
output:
  - pii: {entities: [CREDIT_CARD], action: redact}
"""

ACTIONS = "'redact', 'mask', 'hash', 'block', 'pseudonymize'"


def problems_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(data)
    return info.value.problems


def test_the_documented_example_parses() -> None:
    policy = policy_from_yaml(EXAMPLE)
    assert policy.on_block == "refuse"
    assert policy.refusal == "No."
    assert policy.roles == ("user", "tool")
    assert policy.input == (
        GuardSpec(
            "pii",
            PiiOptions(entities=("EMAIL_ADDRESS", "PHONE_NUMBER"), action="pseudonymize"),
            shadow=True,
            on_error="allow",
            timeout_ms=250,
        ),
        GuardSpec("denylist", DenylistOptions(terms=("falcon",), patterns=(r"ORDER-\d{4}",))),
    )
    assert policy.output == (
        GuardSpec("pii", PiiOptions(entities=("CREDIT_CARD",), action="redact")),
    )


def test_defaults_fail_closed_and_check_every_role() -> None:
    assert DEFAULT_POLICY == Policy() == parse_policy({}) == policy_from_yaml("")
    assert (DEFAULT_POLICY.input, DEFAULT_POLICY.output) == ((), ())
    assert DEFAULT_POLICY.on_block == "error"
    assert DEFAULT_POLICY.roles == ROLES
    assert {"system", "developer", "user", "assistant", "tool"} <= set(ROLES)
    spec = parse_policy({"input": [{"denylist": {"terms": ["x"]}}]}).input[0]
    assert (spec.shadow, spec.on_error, spec.timeout_ms) == (False, "block", 1000)


def test_a_kind_without_options_gets_its_defaults() -> None:
    assert policy_from_yaml("input:\n  - pii:\n").input[0].options == PiiOptions()


def test_policies_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_POLICY.on_block = "refuse"  # type: ignore[misc]


def test_dump_round_trips_through_json_and_yaml() -> None:
    policy = policy_from_yaml(EXAMPLE)
    doc = dump_policy(policy)
    assert msgspec.json.decode(msgspec.json.encode(doc)) == doc
    assert parse_policy(doc) == policy
    assert policy_from_yaml(yaml.safe_dump(doc)) == policy


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param([], [("$", "Expected `object`, got `array`")], id="not-a-mapping"),
        pytest.param({"colour": 1}, [("$.colour", "Unknown field")], id="unknown-top"),
        pytest.param(
            {"on_block": "ignore"},
            [("$.on_block", "Expected one of 'error', 'refuse', got 'ignore'")],
            id="on-block",
        ),
        pytest.param(
            {"refusal": ""}, [("$.refusal", "Expected `str` of length >= 1")], id="refusal"
        ),
        pytest.param(
            {"roles": ["user", "robot"]},
            [("$.roles[1]", f"Expected one of {', '.join(map(repr, ROLES))}, got 'robot'")],
            id="role",
        ),
        pytest.param(
            {"input": {"pii": {}}}, [("$.input", "Expected `array`, got `object`")], id="stage"
        ),
        pytest.param(
            {"input": ["pii"]}, [("$.input[0]", "Expected `object`, got `str`")], id="item"
        ),
        pytest.param(
            {"input": [{"llamaguard": {}}]},
            [("$.input[0].llamaguard", "Unknown guard kind; expected one of: denylist, nemo, pii")],
            id="unknown-kind",
        ),
        pytest.param(
            {"input": [{"nemo": {}}]},
            [("$.input[0].nemo.config", "Missing required field")],
            id="nemo-no-config",
        ),
        pytest.param(
            {"input": [{"nemo": {"config": "../etc"}}]},
            [
                (
                    "$.input[0].nemo.config",
                    "Expected a config name: lower-case letters, digits, '.', '_', '-'",
                )
            ],
            id="nemo-path",
        ),
        pytest.param(
            {"input": [{"pii": {}, "denylist": {"terms": ["x"]}}]},
            [("$.input[0]", "Expected exactly one guard kind, got: pii, denylist")],
            id="two-kinds",
        ),
        pytest.param(
            {"output": [{"shadow": True}]},
            [("$.output[0]", "Missing guard kind; expected one of: denylist, nemo, pii")],
            id="no-kind",
        ),
        pytest.param(
            {"input": [{"pii": {"action": "erase"}}]},
            [("$.input[0].pii.action", f"Expected one of {ACTIONS}, got 'erase'")],
            id="pii-action",
        ),
        pytest.param(
            {"input": [{"pii": {"actions": {"CREDIT_CARD": "nope"}}}]},
            [("$.input[0].pii.actions.CREDIT_CARD", f"Expected one of {ACTIONS}, got 'nope'")],
            id="pii-actions",
        ),
        pytest.param(
            {"input": [{"pii": {"entities": ["EMAIL_ADDRESS", 7]}}]},
            [("$.input[0].pii.entities[1]", "Expected `str`, got `int`")],
            id="pii-entities",
        ),
        pytest.param(
            {"input": [{"pii": {"score_threshold": "high", "colour": 1}}]},
            [
                ("$.input[0].pii.score_threshold", "Expected `float`, got `str`"),
                ("$.input[0].pii.colour", "Unknown field"),
            ],
            id="pii-fields",
        ),
        pytest.param(
            {"input": [{"pii": {"recognizers": [{"pattern": "x"}]}}]},
            [("$.input[0].pii.recognizers[0].name", "Missing required field")],
            id="recognizer-name",
        ),
        pytest.param(
            {"input": [{"pii": {"recognizers": [{"name": "ORDER_ID", "pattern": "(x"}]}}]},
            [
                (
                    "$.input[0].pii.recognizers[0].pattern",
                    "Invalid regular expression: missing ) at position 2",
                )
            ],
            id="recognizer-regex",
        ),
        pytest.param(
            {"input": [{"pii": {"recognizers": [{"name": "A", "pattern": "a" * 1001}]}}]},
            [
                (
                    "$.input[0].pii.recognizers[0].pattern",
                    "Pattern is 1001 characters long; the limit is 512",
                )
            ],
            id="recognizer-too-long",
        ),
        pytest.param(
            {"input": [{"pii": {"recognizers": [{"name": "A", "pattern": "(a|aa)+$"}]}}]},
            [
                (
                    "$.input[0].pii.recognizers[0].pattern",
                    "Pattern backtracks catastrophically (timed out on a probe string); "
                    "avoid nested or overlapping repetition such as (a|aa)+ or (a+)+",
                )
            ],
            id="recognizer-backtracking",
        ),
        pytest.param(
            {"input": [{"pii": {"recognizers": [{"name": "lower", "pattern": "x"}]}}]},
            [
                (
                    "$.input[0].pii.recognizers[0]",
                    "Recognizer name 'lower': use 1-48 upper-case letters, digits or "
                    "underscores, starting with a letter",
                )
            ],
            id="recognizer-name-shape",
        ),
        pytest.param(
            {
                "input": [
                    {
                        "pii": {
                            "recognizers": [
                                {"name": "ORDER", "pattern": "o"},
                                {"name": "ORDER", "pattern": "p"},
                            ]
                        }
                    }
                ]
            },
            [("$.input[0].pii.recognizers[1].name", "Two recognizers have the same name")],
            id="recognizer-duplicate",
        ),
        pytest.param(
            {"input": [{"pii": {"score_threshold": 1.5, "mask_keep": -1}}]},
            [
                ("$.input[0].pii.score_threshold", "Expected a number between 0 and 1"),
                ("$.input[0].pii.mask_keep", "Expected a number >= 0"),
            ],
            id="pii-ranges",
        ),
        pytest.param(
            {"output": [{"pii": {"allow_patterns": ["ok", "[a-"]}}]},
            [
                (
                    "$.output[0].pii.allow_patterns[1]",
                    "Invalid regular expression: unterminated character set at position 3",
                )
            ],
            id="allow-pattern",
        ),
        pytest.param(
            {"input": [{"denylist": {"terms": ["x"], "patterns": ["a|"]}}]},
            [("$.input[0].denylist.patterns[0]", "Pattern matches the empty string")],
            id="denylist-pattern",
        ),
        pytest.param(
            {"input": [{"denylist": {}}]},
            [("$.input[0].denylist", "Expected at least one term or pattern")],
            id="denylist-empty",
        ),
        pytest.param(
            {"input": [{"denylist": {"terms": [""]}}]},
            [("$.input[0].denylist.terms[0]", "Expected `str` of length >= 1")],
            id="denylist-term",
        ),
        pytest.param(
            {"input": [{"pii": {}, "shadow": "yes", "on_error": "ignore", "timeout_ms": 0}]},
            [
                ("$.input[0].shadow", "Expected `bool`, got `str`"),
                ("$.input[0].on_error", "Expected one of 'allow', 'block', got 'ignore'"),
                ("$.input[0].timeout_ms", "Expected `int` >= 1"),
            ],
            id="common-keys",
        ),
        pytest.param(
            {"input": [{"pii": {}, "timeout_ms": 60_001}]},
            [("$.input[0].timeout_ms", "Expected `int` <= 60000")],
            id="timeout-cap",
        ),
    ],
)
def test_problems_carry_their_json_path(data: Any, expected: list[tuple[str, str]]) -> None:
    assert problems_of(data) == expected


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "on_block": "ignore",
        "input": [{"pii": {"action": "erase"}}, {"nemo": {}}, {"denylist": {"patterns": ["("]}}],
        "output": [{"pii": {"mask_keep": "four"}, "on_error": "maybe"}],
    }
    assert [path for path, _ in problems_of(data)] == [
        "$.on_block",
        "$.input[0].pii.action",
        "$.input[1].nemo.config",
        "$.input[2].denylist.patterns[0]",
        "$.output[0].on_error",
        "$.output[0].pii.mask_keep",
    ]


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(PolicyError, match=r"\$\.colour: Unknown field; \$\.size: Unknown field"):
        parse_policy({"colour": 1, "size": 2})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("input: [", "Invalid YAML: expected the node content, but found '<stream end>'"),
        ("- 1", "Expected `object`, got `array`"),
        ("just words", "Expected `object`, got `str`"),
    ],
)
def test_yaml_problems(text: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_from_yaml(text)
    [(path, message)] = info.value.problems
    assert path == "$"
    assert message.startswith(reason)


class FakeOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: int = 1


def test_a_new_kind_is_one_table_entry() -> None:
    kinds = {
        **KINDS,
        "fake": GuardKind(
            FakeOptions,
            lambda options, shadow, registry: NotImplemented,
            lambda options: [(".level", "Too high")] if options.level > 3 else [],
        ),
    }
    policy = parse_policy({"output": [{"fake": {"level": 2}}]}, kinds=kinds)
    assert policy.output[0] == GuardSpec("fake", FakeOptions(level=2))
    with pytest.raises(PolicyError) as info:
        parse_policy({"output": [{"fake": {"level": 9}}, {"llamaguard": {}}]}, kinds=kinds)
    assert info.value.problems == [
        ("$.output[0].fake.level", "Too high"),
        (
            "$.output[1].llamaguard",
            "Unknown guard kind; expected one of: denylist, fake, nemo, pii",
        ),
    ]


def test_parsed_options_are_the_kinds_structs() -> None:
    policy = parse_policy(
        {"input": [{"pii": {"recognizers": [{"name": "ORDER_ID", "pattern": r"ORD-\d+"}]}}]}
    )
    options = policy.input[0].options
    assert isinstance(options, PiiOptions)
    assert options.recognizers == (CustomRecognizer(name="ORDER_ID", pattern=r"ORD-\d+"),)
