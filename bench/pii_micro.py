"""Micro-benchmark of the PII guard's CPU per ~1 KB prompt (no gateway, no network).

    python bench/pii_micro.py [--n 2000] [--profile]

Builds prompts like `post_pii.lua` (an email, a Nigerian mobile, a Luhn-valid card,
an IBAN and an `sk-proj-` key, all but the IBAN different per prompt) and times, per
prompt, the uncached analysis and the pseudonymize actions separately. With
`--vary-iban` the IBAN changes per prompt as well (five varying values).
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time

from rails.base import GuardContext
from rails.pii.actions import apply_actions
from rails.pii.engine import PiiEngine
from rails.pii.options import PiiOptions

TEXT = (
    "Please handle this support ticket. Ticket: Hello, I need help with a billing "
    "problem on my account. Please reach me by email at {} or call me on {} any time after "
    "5pm. Last month you charged my card {} twice for the same invoice, and the refund never "
    "arrived. Please send the refund to my bank account, IBAN {}, instead of the card. Our "
    "developer also pasted our integration key {} into the previous ticket by mistake; "
    "please make sure it is removed from your records. End of ticket. The customer has "
    "written to us twice already about this, so keep the tone warm and avoid jargon. "
    "Summarise the problem for the billing team, list what they should check first, and "
    "draft a short polite reply that confirms the next steps."
)
IBAN = "GB82 WEST 1234 5698 7654 32"


def _card(rng: random.Random) -> str:
    d = [4] + [rng.randint(0, 9) for _ in range(14)]
    total = 0
    for i, v in enumerate(reversed(d)):
        if i % 2 == 0:
            v *= 2
            v -= 9 if v > 9 else 0
        total += v
    d.append((10 - total % 10) % 10)
    s = "".join(map(str, d))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    bban = "WEST" + "".join(rng.choices(string.digits, k=14))
    number = int("".join(str(int(c, 36)) for c in bban + "GB00"))
    iban = f"GB{98 - number % 97:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def prompts(n: int, seed: int = 1, *, vary_iban: bool = False) -> list[str]:
    rng = random.Random(seed)
    alnum = string.ascii_letters + string.digits
    out = []
    for i in range(n):
        key = "sk-proj-k" + str(rng.randint(0, 9)) + "".join(rng.choices(alnum, k=38))
        phone = f"+234 803 123 {rng.randint(0, 9999):04d}"
        iban = _iban(rng) if vary_iban else IBAN
        out.append(TEXT.format(f"ada.obi{i}@example.com", phone, _card(rng), iban, key))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--vary-iban", action="store_true", help="a new IBAN per prompt too")
    args = parser.parse_args()
    engine = PiiEngine.build()
    options = PiiOptions(action="pseudonymize")
    plan = engine.prepare(options)
    texts = prompts(args.n)
    for t in texts[:50]:
        engine.analyze_plan(t, plan, cache=False)
    texts = prompts(args.n, seed=2, vary_iban=args.vary_iban)
    if args.profile:
        import cProfile
        import pstats

        with cProfile.Profile() as prof:
            for t in texts:
                spans = engine.analyze_plan(t, plan, cache=False)
                apply_actions(t, spans, options, GuardContext("t", "r", "m", b"s"), "input")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    analysis, actions, counts = [], [], []
    for t in texts:
        ctx = GuardContext("t", "r", "m", b"secret")
        t0 = time.perf_counter()
        spans = engine.analyze_plan(t, plan, cache=False)
        t1 = time.perf_counter()
        apply_actions(t, spans, options, ctx, "input")
        t2 = time.perf_counter()
        analysis.append((t1 - t0) * 1e6)
        actions.append((t2 - t1) * 1e6)
        counts.append(len(spans))
    total = [a + b for a, b in zip(analysis, actions, strict=True)]
    print(
        f"prompts {len(texts)}, ~{len(texts[0])} chars, spans/prompt {statistics.mean(counts):.2f}"
    )
    for name, xs in (("analysis", analysis), ("actions", actions), ("total", total)):
        xs.sort()
        print(
            f"{name:<10} median {statistics.median(xs):7.1f} us  p95 {xs[int(len(xs) * 0.95)]:7.1f} us"
        )


if __name__ == "__main__":
    main()
