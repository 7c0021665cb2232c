"""PII rails through the gateway: what reaches the upstream, what reaches the client."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError

from gateway.keys import hash_key
from rails.pii.corpus import pii_corpus
from tests.conftest import (
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    Gateway,
    gateway_config,
    start_gateway,
    tenants_config,
)

KEYS = {
    t: f"rg-test-{t}-" + "c" * 40 for t in ("redact", "plain", "pseudo", "block", "refuse", "out")
}
EMAIL = "ada.lovelace@example.com"
CARD = "4111 1111 1111 1111"
PHONE = "+234 803 123 4567"

POLICIES = {
    "redact": {"input": [{"pii": {"entities": ["EMAIL_ADDRESS"], "action": "redact"}}]},
    "plain": None,
    "pseudo": {
        "input": [
            {"pii": {"entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"], "action": "pseudonymize"}}
        ]
    },
    "block": {"input": [{"pii": {"entities": ["CREDIT_CARD"], "action": "block"}}]},
    "refuse": {
        "on_block": "refuse",
        "refusal": "Sorry, I cannot take card numbers.",
        "input": [{"pii": {"entities": ["CREDIT_CARD"], "action": "block"}}],
    },
    "out": {"output": [{"pii": {"entities": ["EMAIL_ADDRESS"], "action": "redact"}}]},
}


@pytest.fixture(scope="module")
def rails_gateway(upstream) -> Iterator[Gateway]:
    raw = gateway_config(upstream.url)
    raw["tenants"] = tenants_config(KEYS, POLICIES)
    server, gw = start_gateway(raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    with server:
        yield gw


def client(gw: Gateway, tenant: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.v1, api_key=KEYS[tenant], max_retries=0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


async def test_tenants_differ_redact_versus_allow(rails_gateway, fresh_upstream):
    async with client(rails_gateway, "redact") as a, client(rails_gateway, "plain") as b:
        raw = await a.chat.completions.with_raw_response.create(
            model="gpt-test", messages=ask(f"mail {EMAIL} today")
        )
        sent_a = fresh_upstream.last().json["messages"][1]["content"]
        await b.chat.completions.create(model="gpt-test", messages=ask(f"mail {EMAIL} today"))
        sent_b = fresh_upstream.last().json["messages"][1]["content"]
    assert EMAIL not in sent_a and sent_a == "mail <EMAIL_ADDRESS> today"
    assert sent_b == f"mail {EMAIL} today"
    assert raw.headers["x-railgate-guards"] == "pii.redacted=1"
    assert float(raw.headers["x-railgate-guard-ms"]) >= 0


async def test_pseudonymize_round_trip(rails_gateway, fresh_upstream):
    prompt = f"Write to {EMAIL} or call {PHONE}."
    async with client(rails_gateway, "pseudo") as sdk:
        reply = await sdk.chat.completions.create(model="echo", messages=ask(prompt))
        sent = fresh_upstream.last().json["messages"][1]["content"]
        # Outside the pseudonyms (whose hex suffix may happen to hold "803") no digit of
        # the phone number is left.
        outside = re.sub(r"<[A-Z_]+_[0-9a-f]+>", "", sent)
        assert EMAIL not in sent and "803" not in outside and "4567" not in outside
        assert re.search(r"<EMAIL_ADDRESS_[0-9a-f]+>", sent)
        assert reply.choices[0].message.content == prompt  # the user reads the real values
        stream = await sdk.chat.completions.create(model="echo", messages=ask(prompt), stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == prompt
        assert EMAIL not in fresh_upstream.last().json["messages"][1]["content"]
        # the next turn resends the history: the same value gets the same placeholder
        await sdk.chat.completions.create(model="echo", messages=ask(prompt))
        assert fresh_upstream.last().json["messages"][1]["content"] == sent


async def test_block_stops_before_the_upstream(rails_gateway, fresh_upstream):
    async with client(rails_gateway, "block") as sdk:
        with pytest.raises(BadRequestError) as info:
            await sdk.chat.completions.create(model="gpt-test", messages=ask(f"card {CARD}"))
    assert info.value.code == "content_filter"
    assert CARD not in str(info.value.body) and "4111" not in info.value.message
    assert fresh_upstream.received == []


async def test_refuse_answers_without_the_upstream(rails_gateway, fresh_upstream):
    async with client(rails_gateway, "refuse") as sdk:
        reply = await sdk.chat.completions.create(model="gpt-test", messages=ask(f"card {CARD}"))
        stream = await sdk.chat.completions.create(
            model="gpt-test", messages=ask(f"card {CARD}"), stream=True
        )
        chunks = [c async for c in stream]
    assert reply.choices[0].message.content == "Sorry, I cannot take card numbers."
    assert reply.choices[0].finish_reason == "content_filter"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Sorry, I cannot take card numbers."
    )
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert fresh_upstream.received == []


async def test_output_rail_redacts_streamed_and_complete_answers(rails_gateway, fresh_upstream):
    prompt = f"reach me at {EMAIL} please"
    async with client(rails_gateway, "out") as sdk:
        reply = await sdk.chat.completions.create(model="echo", messages=ask(prompt))
        stream = await sdk.chat.completions.create(model="echo", messages=ask(prompt), stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert fresh_upstream.last().json["messages"][1]["content"] == prompt  # input untouched
    assert reply.choices[0].message.content == "reach me at <EMAIL_ADDRESS> please"
    assert text == "reach me at <EMAIL_ADDRESS> please"


async def test_embeddings_and_completions_inputs_are_checked(rails_gateway, fresh_upstream):
    async with httpx.AsyncClient(base_url=rails_gateway.v1) as http:
        auth = {"authorization": f"Bearer {KEYS['redact']}"}
        await http.post(
            "/embeddings", headers=auth, json={"model": "gpt-test", "input": [f"x {EMAIL}", "y"]}
        )
        assert fresh_upstream.last().json["input"] == ["x <EMAIL_ADDRESS>", "y"]
        await http.post(
            "/completions", headers=auth, json={"model": "gpt-test", "prompt": f"to {EMAIL}"}
        )
        assert fresh_upstream.last().json["prompt"] == "to <EMAIL_ADDRESS>"


CORPUS_TENANTS = {
    "corpus-redact": {"input": [{"pii": {"action": "redact"}}]},
    "corpus-pseudo": {"input": [{"pii": {"action": "pseudonymize"}}]},
}


@pytest.fixture(scope="module")
def corpus_gateway(upstream) -> Iterator[Gateway]:
    raw = gateway_config(upstream.url)
    raw["tenants"] = [
        {"id": t, "keys": [{"key_sha256": hash_key(f"rg-test-{t}-" + "d" * 40)}], "policy": p}
        for t, p in CORPUS_TENANTS.items()
    ]
    server, gw = start_gateway(raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    with server:
        yield gw


def corpus_values() -> list[tuple[str, list[str]]]:
    samples = pii_corpus(n=120, seed=3)
    return [(s.text, [s.text[a:b] for _, a, b in s.labels]) for s in samples]


@pytest.mark.parametrize("tenant", list(CORPUS_TENANTS))
@pytest.mark.parametrize("stream", [False, True])
async def test_generated_corpus_never_reaches_the_upstream(
    corpus_gateway, fresh_upstream, tenant, stream
):
    key = f"rg-test-{tenant}-" + "d" * 40
    leaked: list[str] = []
    async with AsyncOpenAI(base_url=corpus_gateway.v1, api_key=key, max_retries=0) as sdk:
        for text, values in corpus_values():
            if stream:
                chunks = await sdk.chat.completions.create(
                    model="echo", messages=ask(text), stream=True
                )
                answer = "".join(
                    [c.choices[0].delta.content or "" async for c in chunks if c.choices]
                )
            else:
                reply = await sdk.chat.completions.create(model="echo", messages=ask(text))
                answer = reply.choices[0].message.content
            sent = fresh_upstream.last().body.decode()
            leaked.extend(v for v in values if v in sent)
            if tenant == "corpus-pseudo":
                assert answer == text  # every value restored for the user
    assert leaked == []


async def test_no_pii_prompt_or_key_in_logs(rails_gateway, fresh_upstream, caplog):
    caplog.set_level(logging.DEBUG)
    secret_bits = [EMAIL, CARD, "803 123 4567", "4111"]
    async with client(rails_gateway, "pseudo") as pseudo, client(rails_gateway, "block") as block:
        await pseudo.chat.completions.create(model="echo", messages=ask(f"{EMAIL} {PHONE}"))
        stream = await pseudo.chat.completions.create(
            model="echo", messages=ask(f"{EMAIL} {PHONE}"), stream=True
        )
        _ = [c async for c in stream]
        with pytest.raises(BadRequestError):
            await block.chat.completions.create(model="gpt-test", messages=ask(f"card {CARD}"))
    async with httpx.AsyncClient(base_url=rails_gateway.v1) as http:
        await http.post(
            "/chat/completions",
            headers={"authorization": f"Bearer {KEYS['pseudo']}"},
            content=f'{{"model": "gpt-test", "messages": "{EMAIL}"}}',
        )
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert caplog.records, "expected the gateway to log something at DEBUG"
    for bit in [*secret_bits, *KEYS.values()]:
        assert bit not in logged


async def test_tool_calls_and_tool_results_are_checked(rails_gateway, fresh_upstream):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": f"find {EMAIL}"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": f'{{"email": "{EMAIL}"}}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": f"owner of {EMAIL} is in Lagos"},
    ]
    async with client(rails_gateway, "redact") as sdk:
        await sdk.chat.completions.create(model="gpt-test", messages=messages)
    sent = fresh_upstream.last()
    assert EMAIL not in sent.body.decode()
    got = sent.json["messages"]
    assert got[0]["content"][0]["text"] == "find <EMAIL_ADDRESS>"
    assert got[1]["tool_calls"][0]["function"]["arguments"] == '{"email": "<EMAIL_ADDRESS>"}'
    assert got[2]["content"] == "owner of <EMAIL_ADDRESS> is in Lagos"
    assert got[1]["tool_calls"][0]["function"]["name"] == "lookup"  # the rest untouched


async def test_answer_bytes_untouched_when_rails_change_nothing(rails_gateway, fresh_upstream):
    async with httpx.AsyncClient(base_url=rails_gateway.v1) as http:
        resp = await http.post(
            "/chat/completions",
            headers={"authorization": f"Bearer {KEYS['out']}"},
            json={"model": "pretty", "messages": ask("no personal data here")},
        )
        assert resp.status_code == 200
        assert resp.content.startswith(b'{\n  "id": "chatcmpl-fake"')  # not re-encoded
        changed = await http.post(
            "/chat/completions",
            headers={"authorization": f"Bearer {KEYS['out']}"},
            json={"model": "echo", "messages": ask(f"mail {EMAIL}")},
        )
    assert changed.json()["choices"][0]["message"]["content"] == "mail <EMAIL_ADDRESS>"
