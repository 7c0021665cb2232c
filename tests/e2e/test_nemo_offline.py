"""Proof that NeMo rails never reach the network: every bundled config is built and run
in a fresh interpreter that records each socket connection and DNS lookup it attempts.

The child runs without pytest in `sys.modules` and without CI / do-not-track variables,
the conditions under which NeMo itself would send usage statistics: our engine must
switch them off, and the configs must not make NeMo fetch an embeddings model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    attempts = []

    def audit(event, args):
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else str(address)
            if host not in ("127.0.0.1", "::1", "localhost"):
                attempts.append([event, str(host)])
        elif event == "socket.getaddrinfo" and args[0] not in ("127.0.0.1", "::1", "localhost"):
            attempts.append([event, str(args[0])])

    sys.addaudithook(audit)

    from rails.base import Blocked, GuardContext, ModelCall
    from rails.nemo.engine import NemoEngine, bundled_configs
    from rails.nemo.guard import NemoGuard
    from rails.nemo.options import NemoOptions

    class Judge:
        model = "judge"
        async def complete(self, messages, ctx, **kw):
            return "No", ModelCall("nemo", "judge", 5, 1)

    async def main():
        engine = NemoEngine(Judge())
        outcomes = {}
        for name in bundled_configs():
            guard = NemoGuard(engine, NemoOptions(config=name, params={"terms": ["zzz"]}))
            ctx = GuardContext("t", "r", "m", b"k")
            try:
                await guard.check_all(["be brief", "hello there"], ["system", "user"], "input", ctx)
                await guard.check_all(["hi, how can I help?"], ["assistant"], "output", ctx)
                stream = guard.open_stream(ctx)
                text = await stream.feed("some streamed words ") + await stream.flush()
                outcomes[name] = "passed"
            except Blocked:
                outcomes[name] = "blocked"
        return outcomes

    outcomes = asyncio.run(main())
    print(json.dumps({"outcomes": outcomes, "attempts": attempts}))
    """
)


def test_bundled_configs_make_no_network_attempt() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "DO_NOT_TRACK", "NEMO_GUARDRAILS_NO_USAGE_STATS")
        and not k.startswith("PYTEST")
    }
    env["HOME"] = env.get("HOME", "/tmp")
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert set(result["outcomes"]) >= {
        "self-check",
        "jailbreak-heuristics",
        "topic-guard",
        "blocklist",
    }
    assert set(result["outcomes"].values()) == {"passed"}
