"""The hot-path shortcuts give exactly what the slower reference code gives."""

from __future__ import annotations

import hashlib
import random
import re
import string

import pytest
from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, IbanRecognizer
from presidio_analyzer.predefined_recognizers.generic.iban_patterns import regex_per_country

from rails.base import GuardContext
from rails.pii.actions import _keyed, apply_actions, placeholder_for
from rails.pii.checksums import luhn_ok, mod97_ok
from rails.pii.context import ContextWords, lowered_ascii
from rails.pii.corpus import pii_corpus
from rails.pii.credentials import _API_KEY, _api_keys
from rails.pii.iban import IbanFinder, _validate
from rails.pii.options import PiiOptions
from rails.pii.presidio import OfflineEmailRecognizer
from rails.pii.scan import _EMAIL_DOMAIN, _IBAN, _NUMBER, scan
from rails.pii.spans import Span, resolve_overlaps

IBANS = [
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765432",
    "DE89 3704 0044 0532 0130 00",
    "DE89-3704-0044-0532-0130-00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "GB82 WEST 1234 5698 7654 33",  # bad check digits
    "NL91 ABNA 0417 1643 00 2 days",
    "XX82 WEST 1234 5698 7654 32",  # unknown country
    "DE89370400440532013000 2 days from today",
    "GB29 NWBK 6016 1331 9268 19 and DE44 5001 0517 5407 3249 31",
]


@pytest.mark.parametrize("text", IBANS)
def test_iban_finder_matches_presidio(text: str) -> None:
    recognizer = IbanRecognizer()
    expected = [(r.start, r.end, r.score) for r in recognizer.analyze(text, ["IBAN_CODE"])]
    got = [(s.start, s.end, s.score) for s in IbanFinder(recognizer).find(text)]
    assert got == expected


def test_checksums_match_presidio() -> None:
    rng = random.Random(5)
    card, iban = CreditCardRecognizer(), IbanRecognizer()
    for _ in range(2000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19)))
        value = " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))
        assert luhn_ok(value) == card.validate_result(value)
    check_digits = IbanRecognizer._IbanRecognizer__generate_iban_check_digits  # type: ignore[attr-defined]
    values = [IBANS[0], IBANS[2], IBANS[4], IBANS[5]]
    values += [s.text[a:b] for s in pii_corpus() for e, a, b in s.labels if e == "IBAN_CODE"]
    for value in values + [v[:-1] + ("1" if v[-1] == "0" else "0") for v in values]:
        plain = value.replace("-", "").replace(" ", "")
        assert mod97_ok(value) == (check_digits(plain, IbanRecognizer.LETTERS) == plain[2:4])
        if not mod97_ok(value):
            assert iban.validate_result(value) is False


@pytest.mark.parametrize(
    "text",
    [
        "key sk-abcdefghijklmnopqrstu1234 and rg-" + "a1" * 20,
        "xsk-abcdefghijklmnopqrstu1234 -sk-abcdefghijklmnopqrstu1234",
        "sk-sk-abcdefghijklmnopqrstu1234 sk-proj-" + "Ab1" * 10,
        "no keys here, sk-learn and rg-prod-westeurope",
    ],
)
def test_api_key_search_matches_finditer(text: str) -> None:
    assert [m.span() for m in _api_keys(text)] == [m.span() for m in _API_KEY.finditer(text)]


@pytest.mark.parametrize(
    "value",
    ["ada@example.com", "a.b@example.co.uk", "x@localhost.invalidtld", "a/b@example.com", "q@x.y"],
)
def test_email_domain_verdict_is_cached_without_changing_it(value: str) -> None:
    recognizer = OfflineEmailRecognizer()
    expected = recognizer._tld(value).fqdn != ""
    assert recognizer.validate_result(value) == expected
    assert recognizer.validate_result(value) == expected  # from the cache


def test_resolve_overlaps_keeps_an_already_resolved_sequence() -> None:
    spans = (Span("A", 0, 3, 0.5), Span("B", 3, 5, 0.9), Span("C", 8, 9, 0.1))
    assert resolve_overlaps(spans) == spans
    assert resolve_overlaps([spans[2], spans[0], spans[1]]) == spans
    overlapping = [Span("A", 0, 4, 0.5), Span("B", 3, 5, 0.9)]
    assert resolve_overlaps(overlapping) == (Span("B", 3, 5, 0.9),)


@pytest.mark.parametrize("secret", [b"", b"secret", b"k" * 64, b"\xff" * 65, bytes(range(200))])
def test_keyed_hash_is_keyed_blake2b(secret: bytes) -> None:
    message = b"\x00".join((b"EMAIL_ADDRESS", "é@x.com".encode()))
    key = secret if len(secret) <= 64 else hashlib.blake2b(secret).digest()
    expected = hashlib.blake2b(message, key=key, digest_size=16, person=b"pseudonym")
    assert _keyed(secret, b"pseudonym", "EMAIL_ADDRESS", "é@x.com") == expected.hexdigest()
    # purposes, entities, values and secrets are all separated
    others = {
        _keyed(secret, b"hash", "EMAIL_ADDRESS", "é@x.com"),
        _keyed(secret, b"pseudonym", "EMAIL_ADDRES", "Sé@x.com"),
        _keyed(secret, b"pseudonym", "EMAIL_ADDRESS", "e@x.com"),
        _keyed(secret + b"!", b"pseudonym", "EMAIL_ADDRESS", "é@x.com"),
    }
    assert expected.hexdigest() not in others and len(others) == 4


def test_a_repeated_value_gets_one_placeholder() -> None:
    ctx = GuardContext("t", "r", "m", b"secret")
    text = "a@example.com and a@example.com"
    spans = [Span("EMAIL_ADDRESS", 0, 13, 1.0), Span("EMAIL_ADDRESS", 18, 31, 1.0)]
    out = apply_actions(text, spans, PiiOptions(action="pseudonymize"), ctx, "input")
    first, _, second = out.partition(" and ")
    assert first == second == placeholder_for("EMAIL_ADDRESS", "a@example.com", ctx)
    assert [f.action for f in ctx.findings] == ["pseudonymized", "pseudonymized"]


def _with_check_digits(country: str, bban: str) -> str:
    number = int("".join(str(int(c, 36)) for c in (bban + country + "00").upper()))
    return f"{country}{98 - number % 97:02d}{bban}"


def test_iban_validation_matches_presidio() -> None:
    recognizer, rng = IbanRecognizer(), random.Random(11)
    values = [s.text[a:b] for s in pii_corpus() for e, a, b in s.labels if e == "IBAN_CODE"]
    countries = [*sorted(regex_per_country), "XX", "gb"]
    for _ in range(3000):
        length = rng.randint(8, 30)
        alphabet = rng.choice([string.digits, string.digits + string.ascii_uppercase])
        bban = "".join(
            rng.choices(alphabet + string.ascii_lowercase[: rng.randint(0, 2)], k=length)
        )
        values.append(_with_check_digits(rng.choice(countries), bban))
    values += [v.lower() for v in values[:50]] + [v[:-1] for v in values[:50]]
    values += [" ".join(v[i : i + 4] for i in range(0, len(v), 4)) for v in values[:200]]
    verdicts = {True: 0, False: 0, None: 0}
    for value in values:
        expected = recognizer.validate_result(value)
        assert _validate(value) == expected, value
        verdicts[expected] += 1
    assert all(verdicts.values()), verdicts  # every branch exercised


def test_context_search_on_lowered_text_matches_case_folding_search() -> None:
    words = ContextWords(["phone", "text me", "account number", "bank account", "a/c", "nin"])
    pieces = ["Phone", "TEXT me", "Bank Account Number", "a/c", "_", "x", "9", " ", ".", "nin"]
    rng = random.Random(11)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        lowered = lowered_ascii(text)
        assert lowered == text.lower()
        start = rng.randint(0, len(text))
        end = rng.randint(start, len(text))
        assert words.distance(text, start, end, lowered) == words.distance(text, start, end)
    assert lowered_ascii("Téléphone") is None


def test_email_local_part_scan_matches_a_backward_search() -> None:
    local = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}\Z")
    rng = random.Random(12)
    for _ in range(3000):
        text = "".join(rng.choice("ab.-_ @é+x" + "a" * 5) for _ in range(rng.randint(1, 90)))
        expected = []
        at = text.find("@")
        while at != -1:
            left = local.search(text, max(0, at - 64), at)
            right = _EMAIL_DOMAIN.match(text, at + 1, at + 256)
            if left and right:
                expected.append((left.start(), right.end()))
            at = text.find("@", at + 1)
        assert scan(text).emails == expected


def test_scan_patterns_match_their_re_equivalents() -> None:
    number, iban = re.compile(_NUMBER.pattern), re.compile(_IBAN.pattern)
    rng = random.Random(13)
    for _ in range(3000):
        text = "".join(rng.choice("0123456789 \t.-/()ABGZaz+\u0660é\n") for _ in range(40))
        assert [m.span() for m in _NUMBER.finditer(text)] == [
            m.span() for m in number.finditer(text)
        ]
        assert [m.span() for m in _IBAN.finditer(text)] == [m.span() for m in iban.finditer(text)]
