"""A deterministic, generated corpus for measuring the PII engine.

`pii_corpus()` gives short chat-like texts with labelled entities (emails, Nigerian
and international phones, NINs and BVNs with context words, NUBANs, Luhn-valid
cards, IBANs with valid check digits, IPs, URLs, SSNs, API keys, tokens, JWTs, PEM
keys); `clean_corpus()` gives texts that must produce nothing (code, timestamps,
order ids, prices, UUIDs, versions, cloud terms). Names need an NER model and are
not generated. Everything comes from `random.Random(seed)`: same seed, same corpus.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

__all__ = ["Sample", "clean_corpus", "iban", "luhn_complete", "pii_corpus", "verhoeff_complete"]

Generator = Callable[[random.Random], str]


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    labels: tuple[tuple[str, int, int], ...]
    """`(entity, start, end)` of every entity in `text`."""


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]  # fmt: skip
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]  # fmt: skip
_VERHOEFF_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def verhoeff_complete(body: str) -> str:
    """`body` plus its Verhoeff check digit (the NIN checksum Presidio validates)."""
    c = 0
    for i, digit in enumerate(reversed(body)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[(i + 1) % 8][int(digit)]]
    return body + str(_VERHOEFF_INV[c])


def luhn_complete(body: str) -> str:
    """`body` plus its Luhn check digit."""
    total = 0
    for i, digit in enumerate(reversed(body)):
        d = int(digit) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    """A compact IBAN with valid mod-97 check digits."""
    moved = (bban + country + "00").upper()
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{country}{98 - number % 97:02d}{bban}"


def _group(value: str, size: int = 4) -> str:
    return " ".join(value[i : i + size] for i in range(0, len(value), size))


def _email(rng: random.Random) -> str:
    first = rng.choice(["amaka", "tunde", "chidi", "ngozi", "john", "maria", "li", "fatima"])
    last = rng.choice(["obi", "adeyemi", "okafor", "bello", "smith", "garcia", "chen", "musa"])
    domain = rng.choice(["gmail.com", "yahoo.co.uk", "example.ng", "acme.com.ng", "outlook.com"])
    sep = rng.choice([".", "_", ""])
    return f"{first}{sep}{last}{rng.randint(1, 99) if rng.random() < 0.4 else ''}@{domain}"


def _ng_phone(rng: random.Random) -> str:
    prefix = rng.choice(["803", "806", "703", "706", "813", "816", "810", "903", "906", "915"])
    rest = _digits(rng, 7)
    return rng.choice(
        [
            f"0{prefix} {rest[:3]} {rest[3:]}",
            f"0{prefix}{rest}",
            f"+234 {prefix} {rest[:3]} {rest[3:]}",
            f"+234{prefix}{rest}",
            f"234-{prefix}-{rest[:3]}-{rest[3:]}",
        ]
    )


def _intl_phone(rng: random.Random) -> str:
    region = rng.choice(["GB", "DE", "FR", "IN", "US", "KE", "ZA", "GH"])
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None, region
    national = str(example.national_number)
    while True:
        candidate = national[:-4] + _digits(rng, 4)
        number = phonenumbers.parse(f"+{example.country_code}{candidate}")
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _us_phone(rng: random.Random) -> str:
    while True:
        area, exchange, line = (
            rng.choice([212, 415, 646, 312, 617, 202]),
            rng.randint(200, 999),
            _digits(rng, 4),
        )
        if phonenumbers.is_valid_number(phonenumbers.parse(f"{area}{exchange}{line}", "US")):
            return rng.choice([f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}"])


def _phone(rng: random.Random) -> str:
    pick = rng.random()
    return _ng_phone(rng) if pick < 0.5 else _intl_phone(rng) if pick < 0.8 else _us_phone(rng)


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("6011", 16), ("37", 15)])
    number = luhn_complete(prefix + _digits(rng, length - len(prefix) - 1))
    if length != 16:
        return number
    return rng.choice([number, _group(number), "-".join(_group(number).split())])


def _iban(rng: random.Random) -> str:
    country, bban = rng.choice(
        [
            ("GB", _chars(rng, string.ascii_uppercase, 4) + _digits(rng, 14)),
            ("DE", _digits(rng, 18)),
            ("NL", _chars(rng, string.ascii_uppercase, 4) + _digits(rng, 10)),
            ("ES", _digits(rng, 20)),
        ]
    )
    value = iban(country, bban)
    return _group(value) if rng.random() < 0.5 else value


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    return ":".join(groups) if rng.random() < 0.5 else f"2001:db8::{groups[0]}:{groups[1]}"


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


_ALNUM = string.ascii_letters + string.digits
_GENERATORS: dict[str, Generator] = {
    "EMAIL_ADDRESS": _email,
    "PHONE_NUMBER": _phone,
    "NG_NIN": lambda r: verhoeff_complete(_digits(r, 10)),
    "NG_BVN": lambda r: "22" + _digits(r, 9),
    "NG_NUBAN": lambda r: _digits(r, 10),
    "CREDIT_CARD": _card,
    "IBAN_CODE": _iban,
    "IP_ADDRESS": _ip,
    "URL": lambda r: f"https://{r.choice(['portal', 'files', 'crm'])}.acme{r.randint(1, 99)}.com/u/{_digits(r, 6)}",
    "US_SSN": lambda r: f"{r.randint(100, 665)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}",
    "API_KEY": lambda r: r.choice(["sk-", "sk-proj-", "sk-ant-api03-", "rg-"]) + _chars(r, _ALNUM + "_-", 48),
    "AWS_ACCESS_KEY": lambda r: "AKIA" + _chars(r, string.ascii_uppercase + "234567", 16),
    "GITHUB_TOKEN": lambda r: "ghp_" + _chars(r, _ALNUM, 36),
    "JWT": lambda r: ".".join(
        (_b64url({"alg": "HS256", "typ": "JWT"}), _b64url({"sub": _digits(r, 8), "iat": 1700000000}), _chars(r, _ALNUM + "_-", 43))
    ),
    "PRIVATE_KEY": lambda r: "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(_chars(r, _ALNUM + "+/", 64) for _ in range(4))
    + "\n-----END RSA PRIVATE KEY-----",
}  # fmt: skip
# Some templates give no context on purpose (a US number written bare, a NUBAN
# with no bank word): the engine should miss those, and recall shows it.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "EMAIL_ADDRESS": ("Please send the invoice to {} today.", "my email is {}", "cc <{}> on the thread"),
    "PHONE_NUMBER": ("Call me on {} after 5pm.", "my phone number: {}", "WhatsApp {} for delivery", "Reach me at {}.", "{} is my number.", "Tel: {}"),
    "NG_NIN": ("My NIN is {} for the KYC form.", "national identification number: {}", "NIN - {}", "ID {} (national identity)", "my id is {}"),
    "NG_BVN": ("Here is my BVN {} for verification.", "BVN: {}", "my bvn no is {}", "Bank Verification Number {}"),
    "NG_NUBAN": ("Pay into GTBank account number {} please.", "acct no {} (Zenith)", "send to {} Kuda", "transfer to {} now"),
    "CREDIT_CARD": ("Charge my card {} for the order.", "visa {} exp 09/27", "{} cvv 123"),
    "IBAN_CODE": ("Wire it to IBAN {} by Friday.", "bank details: {}"),
    "IP_ADDRESS": ("The server at {} keeps timing out.", "blocked ip {} in the firewall", "ssh admin@{} -p 22"),
    "URL": ("Open {} to see my file.",),
    "US_SSN": ("My SSN is {} for the tax form.", "social security {}"),
    "API_KEY": ("Use this key: {} in the client.", 'OPENAI_API_KEY="{}"'),
    "AWS_ACCESS_KEY": ("aws_access_key_id = {}",),
    "GITHUB_TOKEN": ("export GITHUB_TOKEN={}",),
    "JWT": ("Authorization: Bearer {}",),
    "PRIVATE_KEY": ("Here is the deploy key:\n{}\nkeep it safe.",),
}  # fmt: skip
_FILLER = (
    "Hi, quick question about my account.",
    "We moved the workers to EKS in us-east-1 last week.",
    "The individual reports are stored in S3.",
    "Thanks for the help so far!",
    "Order ORD-20240115-8842 shipped on 2024-01-15.",
    "It costs $149.99 per month.",
)


def pii_corpus(n: int = 600, seed: int = 7) -> list[Sample]:
    """`n` texts, each with one or two labelled entities between filler sentences."""
    rng = random.Random(seed)
    entities = sorted(_GENERATORS)
    samples = []
    for _ in range(n):
        parts: list[str] = [rng.choice(_FILLER)]
        labels: list[tuple[str, int, int]] = []
        for entity in rng.sample(entities, rng.choice([1, 1, 2])):
            template = rng.choice(_TEMPLATES[entity])
            value = _GENERATORS[entity](rng)
            head = " ".join(parts) + " " + template[: template.index("{}")]
            labels.append((entity, len(head), len(head) + len(value)))
            parts.append(template.format(value))
            parts.append(rng.choice(_FILLER))
        samples.append(Sample(" ".join(parts), tuple(labels)))
    return samples


_CLEAN: tuple[Generator, ...] = (
    lambda r: f"def add(a, b):\n    return a + b  # v{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
    lambda r: f"for i in range({r.randint(2, 999)}):\n    total += prices[i] * {r.randint(2, 9)}",
    lambda r: f"SELECT id, total FROM orders WHERE created_at > '2024-0{r.randint(1, 9)}-1{r.randint(0, 9)} 10:30:00' LIMIT {r.randint(10, 500)};",
    lambda r: f"The job finished at 2024-01-{r.randint(10, 28)}T{r.randint(10, 23)}:{r.randint(10, 59)}:00Z after {r.randint(2, 90)} minutes.",
    lambda r: f"created_at={1700000000 + r.randint(0, 9999999)} updated_ms={1700000000000 + r.randint(0, 10**9)}",
    lambda r: f"Order ORD-{r.randint(2019, 2025)}{r.randint(10, 12)}{r.randint(10, 28)}-{r.randint(1000, 9999)} total ₦{r.randint(1, 999)},{r.randint(100, 999)}.00",
    lambda r: f"Invoice INV-2024-{r.randint(10000, 99999)} is due; amount ${r.randint(1, 9)},{r.randint(100, 999)}.{r.randint(10, 99)} incl. VAT.",
    lambda r: f"request id {r.getrandbits(128):032x} trace 00-{r.getrandbits(128):032x}-{r.getrandbits(64):016x}-01",
    lambda r: f"uuid = '{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-a{r.getrandbits(12):03x}-{r.getrandbits(48):012x}'",
    lambda r: f"Deploy the individual services to EKS in us-east-{r.randint(1, 2)}; the S3 bucket logs-{r.randint(100, 999)} keeps {r.randint(7, 90)} days.",
    lambda r: f"Resize the t3.{r.choice(['small', 'medium', 'large'])} nodes; resource group rg-prod-westeurope-network stays.",
    lambda r: f"arn:aws:iam::{r.randint(10**11, 10**12 - 1)}:role/deploy and sg-{r.getrandbits(32):08x}",
    lambda r: f"numpy=={r.randint(1, 2)}.{r.randint(0, 26)}.{r.randint(0, 9)} python 3.11.{r.randint(0, 9)} on port {r.randint(1024, 65000)}",
    lambda r: f"Tracking number {r.randint(10**10, 10**11 - 1)} ({r.randint(2, 9)} parcels), ETA {r.randint(1, 28)}/0{r.randint(1, 9)}/2024.",
    lambda r: f"commit {r.getrandbits(160):040x} fixed issue #{r.randint(100, 9999)}; see PR #{r.randint(100, 9999)}.",
    lambda r: f"Temperature {r.randint(-20, 45)}°C at 10:{r.randint(10, 59)}:{r.randint(10, 59)}, humidity {r.randint(10, 99)}%, {r.randint(1000, 1040)} hPa.",
    lambda r: f"const total = items.reduce((s, x) => s + x.price, 0); // {r.randint(1, 500)} items, {r.random():.4f} avg",
    lambda r: f"Matrix [[{r.randint(0, 99)}, {r.randint(0, 99)}], [{r.randint(0, 99)}, {r.randint(0, 99)}]] and scikit-learn {r.randint(0, 1)}.{r.randint(0, 9)}",
    lambda r: f"Your account was created at {1600000000 + r.randint(0, 10**8)} and renews yearly.",
    lambda r: f"Order number {r.randint(2 * 10**9, 9 * 10**9)} ships today; ISBN 978-{r.randint(0, 9)}-{r.randint(10, 99)}-{r.randint(100000, 999999)}-{r.randint(0, 9)}.",
    lambda r: f"BVN checks failed with code {r.randint(10000, 99999)}; the NIN portal opens 08:00-16:00 daily.",
    lambda r: f"The AKIA prefix marks long-term keys; GET /v1/models returned HTTP/1.1 {r.choice([200, 404, 429])} in {r.randint(2, 900)} ms.",
    lambda r: f"Price moved from ₦{r.randint(1, 9)},{r.randint(100, 999)},000.00 to ₦{r.randint(1, 9)},{r.randint(100, 999)},500.00 (-{r.randint(1, 30)}.{r.randint(0, 9)}%).",
)  # fmt: skip


def clean_corpus(n: int = 400, seed: int = 11) -> list[Sample]:
    """`n` texts that contain no PII at all."""
    rng = random.Random(seed)
    return [Sample(" ".join(rng.choice(_CLEAN)(rng) for _ in range(3)), ()) for _ in range(n)]
