"""What the engine finds and, as important, what it leaves alone."""

from __future__ import annotations

import pytest

from rails.pii.corpus import verhoeff_complete
from rails.pii.engine import PiiEngine
from rails.pii.options import PiiOptions
from rails.pii.scan import scan
from rails.pii.testing import shared_engine

NIN = verhoeff_complete("7012345678")  # passes Presidio's Verhoeff check
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi"
    "aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKB\n"
    "UiAsUJmWiHkUTxDwKTxKmrZaN4+Id1R3xDkOcTIm2zqAn+I5wJSSwvIIcaZL3jBe\n"
    "-----END RSA PRIVATE KEY-----"
)
PEM_TRUNCATED = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDx3H"  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> PiiEngine:
    return shared_engine()


def found(engine: PiiEngine, text: str, **options: object) -> set[tuple[str, str]]:
    spans = engine.analyze(text, PiiOptions(**options))  # type: ignore[arg-type]
    return {(s.entity, text[s.start : s.end]) for s in spans}


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("write to amaka.obi@example.ng today", "EMAIL_ADDRESS", "amaka.obi@example.ng"),
        ("EMAIL: John.Doe+tag@Mail.Example.COM", "EMAIL_ADDRESS", "John.Doe+tag@Mail.Example.COM"),
        ("reach me: <tunde_bello7@yahoo.co.uk>", "EMAIL_ADDRESS", "tunde_bello7@yahoo.co.uk"),
        # Nigerian mobiles: +234 / 234 / 0, with spaces or dashes; no context needed
        ("my line +234 803 123 4567 ok", "PHONE_NUMBER", "+234 803 123 4567"),
        ("08031234567 is mine", "PHONE_NUMBER", "08031234567"),
        ("ring 0803-123-4567", "PHONE_NUMBER", "0803-123-4567"),
        ("try 234 905 765 4321 later", "PHONE_NUMBER", "234 905 765 4321"),
        ("or +2347012345678.", "PHONE_NUMBER", "+2347012345678"),
        ("office 0810 222 3333", "PHONE_NUMBER", "0810 222 3333"),
        ("WhatsApp +234 (0) 913 555 0000", "PHONE_NUMBER", "+234 (0) 913 555 0000"),
        # international with +, national with a context word
        ("London office +44 20 7946 0958.", "PHONE_NUMBER", "+44 20 7946 0958"),
        ("NY: +1 212-555-0198", "PHONE_NUMBER", "+1 212-555-0198"),
        ("Nairobi +254 712 123456", "PHONE_NUMBER", "+254 712 123456"),
        ("call me on (212) 555-0198 tonight", "PHONE_NUMBER", "(212) 555-0198"),
        ("phone: 020 7946 0958", "PHONE_NUMBER", "020 7946 0958"),
        ("Visa 4111 1111 1111 1111 exp 09/27", "CREDIT_CARD", "4111 1111 1111 1111"),
        ("card 5500-0000-0000-0004", "CREDIT_CARD", "5500-0000-0000-0004"),
        ("amex 378282246310005", "CREDIT_CARD", "378282246310005"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN_CODE", "GB82 WEST 1234 5698 7654 32"),
        ("to DE89370400440532013000.", "IBAN_CODE", "DE89370400440532013000"),
        ("server 10.20.30.40 is down", "IP_ADDRESS", "10.20.30.40"),
        ("v6 2001:db8::8a2e:370:7334 too", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        ("see https://files.acme.com/u/123?x=1 now", "URL", "https://files.acme.com/u/123?x=1"),
        ("see www.example.org", "URL", "www.example.org"),
        ("SSN 536-22-8745", "US_SSN", "536-22-8745"),
        (f"my NIN is {NIN}", "NG_NIN", NIN),
        (f"national identification number: {NIN}.", "NG_NIN", NIN),
        (f"{NIN} (NIN)", "NG_NIN", NIN),
        ("my BVN 22212345678", "NG_BVN", "22212345678"),
        ("bank verification number: 22198765432", "NG_BVN", "22198765432"),
        ("GTBank account number 0123456789", "NG_NUBAN", "0123456789"),
        ("acct: 2087654321 (Zenith)", "NG_NUBAN", "2087654321"),
        ("my account is 3012345678", "NG_NUBAN", "3012345678"),
        ("key sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk6l", "API_KEY", "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk6l"),
        ("sk-proj-Xy9_ab-CD3ef4GH5ij6KL7mn8OP9qr0ST1uv2WX3y", "API_KEY", "sk-proj-Xy9_ab-CD3ef4GH5ij6KL7mn8OP9qr0ST1uv2WX3y"),
        ('ANTHROPIC="sk-ant-api03-q1Wn7d0kP3s9Lx2Vb6Tz8Hc4Rj5Mf1Ya0Ue7"', "API_KEY", "sk-ant-api03-q1Wn7d0kP3s9Lx2Vb6Tz8Hc4Rj5Mf1Ya0Ue7"),
        ("rg-q1Wn7d0kP3s9Lx2Vb6Tz8Hc4Rj5Mf1Ya0Ue7Io3Gp9S", "API_KEY", "rg-q1Wn7d0kP3s9Lx2Vb6Tz8Hc4Rj5Mf1Ya0Ue7Io3Gp9S"),
        ("aws_access_key_id=AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ("ASIAY34FZKBOKMUTVV7A temp", "AWS_ACCESS_KEY", "ASIAY34FZKBOKMUTVV7A"),
        ("GITHUB_TOKEN=ghp_16C7e42F292c6912E7710c838347Ae178B4a", "GITHUB_TOKEN", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
        ("github_pat_11AABBCCDD0aBcDeFgHiJkLm_nOpQrStUvWxYz01234", "GITHUB_TOKEN", "github_pat_11AABBCCDD0aBcDeFgHiJkLm_nOpQrStUvWxYz01234"),
        (f"Authorization: Bearer {JWT}", "JWT", JWT),
        (f"key:\n{PEM}\nthanks", "PRIVATE_KEY", PEM),
        (f"partial {PEM_TRUNCATED}", "PRIVATE_KEY", PEM_TRUNCATED),
    ],
)  # fmt: skip
def test_finds(engine: PiiEngine, text: str, entity: str, value: str) -> None:
    assert (entity, value) in found(engine, text)


@pytest.mark.parametrize(
    "text",
    [
        "individual",
        "Deploy the individual services to EKS in us-east-1; logs go to S3 and t3.medium nodes.",
        "resource group rg-prod-westeurope-network and scikit-learn (sk-learn) 1.4",
        "The AKIA prefix marks long-term keys; ghp_ is a GitHub prefix.",
        "2024-01-15T10:30:00Z",
        "SELECT * FROM orders WHERE created_at > '2024-01-15 10:30:00' LIMIT 50;",
        "epoch 1705312200, in ms 1705312200123",
        "Order ORD-20240115-8842 and #12345678 and INV-2024-000123",
        "It costs $1,299.99 or ₦45,000.00 (-12.5%).",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "numpy==1.26.4, python 3.11.7, HTTP/1.1 200 OK, port 8080",
        "std::vector<int> v; auto x = a::b::c();",
        "Tracking number 12345678901 (3 parcels)",
        f"Reference {NIN} was printed twice.",  # a valid NIN checksum, but no context
        "Order number 4155550123 ships today",
        "Your account was created at 1705312200 and renews yearly.",
        "ISBN 978-3-16-148410-0",
        "BVN checks failed with code 40011; the NIN portal opens 08:00-16:00.",
        "Visa 4111 1111 1111 1112",  # fails Luhn
        "SSN 000-12-3456",  # area 000 is never issued
        "see main.py, os.path.join and config.yaml",  # no scheme, no www: not a URL
        "IBAN GB00 WEST 1234 5698 7654 32",  # wrong check digits
        "mail me at a@b.invalidtld",
        "999.999.1.1 is not an address",
        "header eyJhbGciOi only",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
        "def add(a, b):\n    return a + b  # 3 + 4 = 7",
    ],
)
def test_leaves_alone(engine: PiiEngine, text: str) -> None:
    assert found(engine, text) == set()


def test_text_without_candidates_is_not_scanned_further() -> None:
    assert not scan("Plain words, nothing that could be personal data here.")
    assert scan("mail a@b.co")


def test_nearest_context_word_decides_between_bvn_and_nin(engine: PiiEngine) -> None:
    text = f"My BVN is 22212345678 and my NIN is {NIN}."
    assert found(engine, text) == {("NG_BVN", "22212345678"), ("NG_NIN", NIN)}


def test_nin_failing_its_checksum_scores_below_the_default_threshold(engine: PiiEngine) -> None:
    assert found(engine, "NIN 12345678901") == set()
    assert found(engine, "NIN 12345678901", score_threshold=0.3) == {("NG_NIN", "12345678901")}


def test_entities_option_limits_what_is_found(engine: PiiEngine) -> None:
    text = "a@example.com or +44 20 7946 0958"
    assert found(engine, text, entities=("EMAIL_ADDRESS",)) == {("EMAIL_ADDRESS", "a@example.com")}


def test_a_lower_threshold_admits_national_numbers_without_context(engine: PiiEngine) -> None:
    text = "(212) 555-0198"
    assert found(engine, text) == set()
    assert found(engine, text, score_threshold=0.4) == {("PHONE_NUMBER", text)}


def test_results_are_cached_per_text_and_options(engine: PiiEngine) -> None:
    options = PiiOptions(entities=("EMAIL_ADDRESS",), score_threshold=0.51)
    text = "cache me: cached@example.com"
    first = engine.analyze(text, options)
    assert engine.analyze(text, options) == first
    assert engine.prepare(options) is engine.prepare(
        PiiOptions(entities=("EMAIL_ADDRESS",), score_threshold=0.51)
    )
    assert engine.prepare(options).key != engine.prepare(PiiOptions()).key


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PiiOptions(entities=("EMAIL",)), "unknown entity 'EMAIL'"),
        (PiiOptions(entities=("PERSON",)), "PERSON needs an NER model"),
        (PiiOptions(actions={"PASSPORT": "block"}), "unknown entity 'PASSPORT'"),
        (PiiOptions(score_threshold=1.5), "score_threshold"),
        (PiiOptions(mask_keep=-1), "mask_keep"),
        (PiiOptions(allow_patterns=("(",)), "allow_patterns[0]: invalid regular expression"),
    ],
)
def test_bad_options_are_refused_with_a_reason(
    engine: PiiEngine, options: PiiOptions, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        engine.prepare(options)


def test_missing_spacy_model_is_refused_not_downloaded() -> None:
    with pytest.raises(ValueError, match="not installed"):
        PiiEngine.build(nlp_model="xx_railgate_missing_model")
