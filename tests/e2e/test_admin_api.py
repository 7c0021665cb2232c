"""The admin API through a real gateway, on `memory://` and on the local Redis.

Tenants (CRUD, pagination, the config file's tenants read-only), keys (the secret once,
working with the `openai` SDK, revoke, rotate with a grace period, expiry, disabled
tenants), policies (versions, rollback, 422 with paths leaving the active version),
dry-run, usage reports equal to the ledger (JSON, CSV, `/v1/usage`), data-subject
export and erasure, the audit log (and no secret in it), admin auth on every route, and
tenant isolation.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.admin.usage import CSV_COLUMNS
from gateway.keys import hash_key
from tests.admin_client import (
    ADMIN_CONFIG,
    ADMIN_KEY,
    OPS_KEY,
    admin_http,
    eventually,
    serve_admin,
)
from tests.conftest import REDIS_URL, gateway_config
from tests.fakes import FakeUpstream
from tests.local_redis import redis_prefix

CFG_TENANT = "cfg"
CFG_KEY = "rg-admin-cfg-" + "d" * 40
PII_EMAIL = {"input": [{"pii": {"entities": ["EMAIL_ADDRESS"], "action": "redact"}}]}


def config(upstream: FakeUpstream, store: str) -> dict[str, Any]:
    tenants = [{"id": CFG_TENANT, "keys": [{"name": "file", "key_sha256": hash_key(CFG_KEY)}]}]
    return gateway_config(
        upstream.url,  # type: ignore[attr-defined]
        store=store,
        tenants=tenants,
        admin=ADMIN_CONFIG,
        ledger={"flush_interval_ms": 20},
    )


@pytest.fixture(scope="module", params=["memory", "redis"])
def gw(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[str]:
    if request.param == "memory":
        with serve_admin(config(upstream, "memory://")) as url:
            yield url
        return
    with (
        redis_prefix("rgtest-admin") as prefix,
        serve_admin(config(upstream, f"{REDIS_URL}?prefix={prefix}")) as url,
    ):
        yield url


@pytest.fixture
def http(gw: str) -> Iterator[httpx.Client]:
    with admin_http(gw) as client:
        yield client


def new_tenant(http: httpx.Client, **fields: Any) -> str:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    r = http.post("/admin/v1/tenants", json={"id": tenant, **fields})
    assert r.status_code == 201, r.text
    return tenant


def new_key(http: httpx.Client, tenant: str, **fields: Any) -> dict[str, Any]:
    r = http.post(f"/admin/v1/tenants/{tenant}/keys", json=fields)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def chat(gw: str, key: str, text: str = "hi", **fields: Any) -> Any:
    """One chat completion with the official SDK, as a client of the gateway would."""
    messages = [{"role": "user", "content": text}]
    with openai.OpenAI(base_url=gw + "/v1", api_key=key, max_retries=0) as client:
        return client.chat.completions.create(
            model=fields.pop("model", "mock-1"), messages=messages, **fields
        )


def works(gw: str, key: str) -> bool:
    try:
        chat(gw, key)
    except openai.AuthenticationError:
        return False
    return True


def error_of(r: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = r.json()["error"]
    return error


def audit_for(http: httpx.Client, target_prefix: str) -> list[dict[str, Any]]:
    entries = http.get("/admin/v1/audit", params={"limit": 1000}).json()["data"]
    return [e for e in entries if e["target"].startswith(target_prefix)]


# -- tenants -------------------------------------------------------------------------


def test_tenant_crud_pagination_and_conflicts(http: httpx.Client) -> None:
    stem = f"p{uuid.uuid4().hex[:6]}"
    made = [f"{stem}-{i}" for i in range(5)]
    for tenant in reversed(made):
        r = http.post("/admin/v1/tenants", json={"id": tenant, "name": tenant.upper()})
        assert r.status_code == 201 and r.json()["source"] == "store"

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get("/admin/v1/tenants", params=params).json()
        assert len(page["data"]) <= 2
        seen += [t["id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert [t for t in seen if t.startswith(stem)] == made
    assert CFG_TENANT in seen
    listed = http.get("/admin/v1/tenants", params={"limit": 500}).json()["data"]
    assert {t["id"]: t["source"] for t in listed}[CFG_TENANT] == "config"

    tenant = made[0]
    r = http.patch(
        f"/admin/v1/tenants/{tenant}",
        json={
            "models": ["mock-1"],
            "limits": {"rpm": 60, "budget_usd_day": 5},
            "metadata": {"team": "x"},
        },
    )
    assert r.status_code == 200, r.text
    got = http.get(f"/admin/v1/tenants/{tenant}").json()
    assert got["name"] == tenant.upper()  # left out: kept
    assert got["models"] == ["mock-1"] and got["limits"] == {"rpm": 60, "budget_usd_day": 5.0}
    assert got["metadata"] == {"team": "x"} and got["updated_at"] >= got["created_at"]
    assert http.patch(f"/admin/v1/tenants/{tenant}", json={"models": None}).json()["models"] is None

    r = http.patch(f"/admin/v1/tenants/{tenant}", json={"models": ["nope"]})
    assert r.status_code == 400 and error_of(r)["param"] == "models"
    r = http.patch(f"/admin/v1/tenants/{tenant}", json={"colour": "red"})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_request"
    r = http.post("/admin/v1/tenants", json={"id": "bad id!"})
    assert r.status_code == 400
    r = http.get("/admin/v1/tenants", params={"limit": 0})
    assert r.status_code == 400 and error_of(r)["param"] == "limit"

    r = http.post("/admin/v1/tenants", json={"id": tenant})
    assert r.status_code == 409 and error_of(r)["code"] == "conflict"
    for r in (
        http.post("/admin/v1/tenants", json={"id": CFG_TENANT}),
        http.patch(f"/admin/v1/tenants/{CFG_TENANT}", json={"name": "x"}),
        http.post(f"/admin/v1/tenants/{CFG_TENANT}/disable"),
        http.delete(f"/admin/v1/tenants/{CFG_TENANT}"),
    ):
        assert r.status_code == 409, r.text
        assert "config file" in error_of(r)["message"]
    assert http.get(f"/admin/v1/tenants/{CFG_TENANT}").json()["source"] == "config"

    for t in made:
        assert http.delete(f"/admin/v1/tenants/{t}").status_code == 204
    r = http.get(f"/admin/v1/tenants/{tenant}")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    assert http.delete(f"/admin/v1/tenants/{tenant}").status_code == 404


# -- keys ----------------------------------------------------------------------------


def test_key_create_list_revoke_and_disabled_tenant(gw: str, http: httpx.Client) -> None:
    tenant = new_tenant(http)
    created = new_key(http, tenant, name="ci", limits={"rpm": 100})
    secret = created["key"]
    assert secret.startswith("rg-") and created["id"].startswith("key_")
    assert created["prefix"] == secret[:7] and created["status"] == "active"
    assert created["last_used_at"] is None
    before = time.time()
    reply = chat(gw, secret, "Hello")
    assert reply.choices[0].message.content == "mock-1 heard: Hello"

    listed = eventually(
        lambda: (
            (r := http.get(f"/admin/v1/tenants/{tenant}/keys")).json()["data"][0]["last_used_at"]
            and r
        )
    )
    (key,) = listed.json()["data"]
    assert key["id"] == created["id"] and key["name"] == "ci" and key["limits"] == {"rpm": 100}
    assert before <= key["last_used_at"] <= time.time()  # recorded in the background
    assert secret not in listed.text and "key_sha256" not in listed.text
    assert hash_key(secret) not in listed.text and "key_sha256" not in created

    assert http.post(f"/admin/v1/tenants/{tenant}/disable").json()["disabled"] is True
    assert not works(gw, secret)
    assert http.post(f"/admin/v1/tenants/{tenant}/enable").json()["disabled"] is False
    assert works(gw, secret)

    r = http.delete(f"/admin/v1/tenants/{tenant}/keys/{created['id']}")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert not works(gw, secret)
    assert http.delete(f"/admin/v1/tenants/{tenant}/keys/key_unknown").status_code == 404
    assert http.get("/admin/v1/tenants/t-none/keys").status_code == 404

    # A config-file tenant may get store keys.
    cfg_key = new_key(http, CFG_TENANT)["key"]
    assert works(gw, cfg_key)


def test_key_rotation_grace_and_expiry(gw: str, http: httpx.Client) -> None:
    tenant = new_tenant(http)
    old = new_key(http, tenant, name="svc", limits={"tpm": 5000})
    before = time.time()
    r = http.post(f"/admin/v1/tenants/{tenant}/keys/{old['id']}/rotate", json={})
    assert r.status_code == 200, r.text
    rotated = r.json()
    new = rotated["key"]
    assert new["name"] == "svc" and new["limits"] == {"tpm": 5000} and new["key"] != old["key"]
    assert rotated["old"]["replaced_by"] == new["id"]
    assert before + 3600 - 5 < rotated["old"]["expires_at"] <= time.time() + 3600
    assert works(gw, new["key"]) and works(gw, old["key"])  # within the grace period
    r = http.post(f"/admin/v1/tenants/{tenant}/keys/{old['id']}/rotate", json={})
    assert r.status_code == 409

    other = new_key(http, tenant)
    r = http.post(
        f"/admin/v1/tenants/{tenant}/keys/{other['id']}/rotate", json={"grace_seconds": 0}
    )
    assert r.status_code == 200 and r.json()["old"]["status"] == "expired"
    assert not works(gw, other["key"]) and works(gw, r.json()["key"]["key"])
    r = http.post(f"/admin/v1/tenants/{tenant}/keys/{old['id']}/rotate", json={"grace_seconds": -1})
    assert r.status_code == 400

    soon = new_key(http, tenant, expires_at=time.time() + 3600)
    assert works(gw, soon["key"])
    r = http.patch(f"/admin/v1/tenants/{tenant}/keys/{soon['id']}", json={"expires_at": 1.0})
    assert r.status_code == 400 and error_of(r)["param"] == "expires_at"
    r = http.post(f"/admin/v1/tenants/{tenant}/keys", json={"expires_at": time.time() - 1})
    assert r.status_code == 400
    r = http.patch(f"/admin/v1/tenants/{tenant}/keys/{soon['id']}", json={"name": "renamed"})
    assert r.json()["name"] == "renamed" and r.json()["expires_at"] == soon["expires_at"]
    r = http.patch(f"/admin/v1/tenants/{tenant}/keys/{soon['id']}", json={"expires_at": None})
    assert r.json()["expires_at"] is None


# -- policies ------------------------------------------------------------------------


def test_policy_versions_rollback_and_invalid_documents(http: httpx.Client) -> None:
    tenant = new_tenant(http)
    base = f"/admin/v1/tenants/{tenant}/policy"
    got = http.get(base).json()
    assert got["source"] == "default" and got["version"] is None

    v1 = {"input": [{"denylist": {"terms": ["zeus"]}}]}
    v2 = {"input": [{"denylist": {"terms": ["apollo"], "patterns": ["(?i)internal only"]}}]}
    r = http.put(base, json=v1)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["author"] == "env" and r.json()["active"]
    assert http.put(base, json=v2).json()["version"] == 2
    assert http.get(base).json() == {
        "tenant_id": tenant,
        "source": "store",
        "version": 2,
        "document": v2,
    }
    assert http.get(f"/admin/v1/tenants/{tenant}").json()["policy_version"] == 2

    invalid = [
        ({"on_block": "explode", "input": [{"denylist": {"terms": "zeus"}}]}, "$.on_block"),
        ({"input": [{"denylist": {"patterns": ["(unclosed"]}}]}, "$.input[0].denylist.patterns[0]"),
        ({"input": [{"pii": {"entities": ["NOT_AN_ENTITY"]}}]}, "$"),
        ({"output": [{"shout": {}}]}, "$.output[0].shout"),
    ]
    for document, path in invalid:
        r = http.put(base, json=document)
        assert r.status_code == 422, r.text
        error = error_of(r)
        assert error["code"] == "invalid_policy"
        assert path in [d["path"] for d in error["details"]], error
        assert all(d["reason"] for d in error["details"])
        assert http.get(base).json()["version"] == 2
    details = error_of(http.put(base, json=invalid[0][0]))["details"]
    assert {d["path"] for d in details} == {"$.on_block", "$.input[0].denylist.terms"}
    reason = error_of(http.put(base, json=invalid[2][0]))["details"][0]["reason"]
    assert "NOT_AN_ENTITY" in reason
    assert http.put(base, json=[1, 2]).status_code == 400  # not even an object

    versions = http.get(base + "/versions").json()["data"]
    assert [(v["version"], v["active"]) for v in versions] == [(1, False), (2, True)]
    assert http.get(base + "/versions/1").json()["document"] == v1
    assert http.get(base + "/versions/9").status_code == 404
    r = http.post(base + "/rollback", json={"version": 1})
    assert r.status_code == 200 and r.json()["active"]
    assert http.get(base).json()["version"] == 1
    assert [v["active"] for v in http.get(base + "/versions").json()["data"]] == [True, False]
    assert http.post(base + "/rollback", json={"version": 7}).status_code == 404

    # A config tenant: its file policy is shown, a store policy may be set.
    assert http.get(f"/admin/v1/tenants/{CFG_TENANT}/policy").json()["source"] == "default"
    assert http.get("/admin/v1/tenants/t-none/policy").status_code == 404


def test_dry_run_transforms_finds_and_blocks(http: httpx.Client, upstream: FakeUpstream) -> None:
    calls = len(upstream.received)
    r = http.post(
        "/admin/v1/policies/dry-run",
        json={
            "policy": PII_EMAIL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Write to alice@example.com today"},
            ],
        },
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert "alice@example.com" not in r.text
    assert result["messages"][1]["content"] == "Write to <EMAIL_ADDRESS> today"
    assert result["findings"] == [
        {
            "stage": "input",
            "guard": "pii",
            "entity": "EMAIL_ADDRESS",
            "action": "redacted",
            "count": 1,
        }
    ]
    assert result["verdict"]["outcome"] == "allowed" and result["policy_source"] == "request"

    pseudo = {"input": [{"pii": {"entities": ["EMAIL_ADDRESS"], "action": "pseudonymize"}}]}
    first = http.post(
        "/admin/v1/policies/dry-run",
        json={"policy": pseudo, "messages": [{"role": "user", "content": "mail bob@example.com"}]},
    ).json()
    placeholder = first["messages"][0]["content"].removeprefix("mail ")
    assert placeholder.startswith("<EMAIL_ADDRESS_")
    second = http.post(
        "/admin/v1/policies/dry-run",
        json={
            "policy": pseudo,
            "messages": [{"role": "user", "content": "mail bob@example.com"}],
            "answer": f"Sent to {placeholder}.",
        },
    ).json()
    assert second["answer"] == "Sent to bob@example.com."  # restored, as the user sees it

    tenant = new_tenant(http)
    http.put(
        f"/admin/v1/tenants/{tenant}/policy", json={"input": [{"denylist": {"terms": ["zeus"]}}]}
    )
    r = http.post(
        "/admin/v1/policies/dry-run",
        json={"tenant": tenant, "messages": [{"role": "user", "content": "About Zeus"}]},
    )
    assert r.json()["verdict"] == {
        "outcome": "blocked",
        "stage": "input",
        "guard": "denylist",
        "reason": "The text contains denied content.",
    }
    assert r.json()["policy_source"] == "store"
    r = http.post(
        "/admin/v1/policies/dry-run",
        json={"tenant": tenant, "messages": [], "answer": "zeus again"},
    )
    assert r.json()["verdict"]["outcome"] == "allowed"  # input-only policy

    r = http.post("/admin/v1/policies/dry-run", json={"policy": {"input": 3}, "messages": []})
    assert r.status_code == 422 and error_of(r)["details"][0]["path"] == "$.input"
    assert http.post("/admin/v1/policies/dry-run", json={"messages": []}).status_code == 400
    r = http.post("/admin/v1/policies/dry-run", json={"tenant": "t-none"})
    assert r.status_code == 404
    assert len(upstream.received) == calls  # no provider was called


# -- usage, data subjects --------------------------------------------------------------


def report(http: httpx.Client, tenant: str, **params: Any) -> httpx.Response:
    return http.get("/admin/v1/usage", params={"tenant": tenant, **params})


def test_usage_report_equals_the_ledger(gw: str, http: httpx.Client) -> None:
    tenant = new_tenant(http)
    keys = [new_key(http, tenant, name=f"k{i}") for i in range(2)]
    sent = [
        (keys[0], "mock-1", "u1"),
        (keys[0], "gpt-test", "u1"),
        (keys[1], "gpt-test", "u2"),
        (keys[1], "mock-1", None),
    ]
    usages = []
    for key, model, user in sent:
        extra = {"user": user} if user else {}
        usages.append(chat(gw, key["key"], f"hello {model}", model=model, **extra).usage)
    with pytest.raises(openai.RateLimitError):
        chat(gw, keys[0]["key"], model="status-429", user="u2")

    def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = report(http, tenant).json()
        return body if body["total"]["requests"] == len(sent) + 1 else None

    body = eventually(settled)
    total = body["total"]
    assert total["prompt_tokens"] == sum(u.prompt_tokens for u in usages)
    assert total["completion_tokens"] == sum(u.completion_tokens for u in usages)
    assert (total["errors"], total["limited"], total["blocked"]) == (1, 1, 0)
    assert total["cost_micro_usd"] > 0 and total["cost_usd"] == total["cost_micro_usd"] / 1e6
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert body["to"] == today and [r["group"] for r in body["data"]] == [today]

    # The ledger's own records (the data-subject export) add up to the report's rows.
    by_user = {r["group"]: r for r in report(http, tenant, group_by="user").json()["data"]}
    assert set(by_user) == {None, "u1", "u2"}
    for user in ("u1", "u2"):
        records = http.get(f"/admin/v1/tenants/{tenant}/users/{user}/export").json()["records"]
        row = by_user[user]
        assert row["requests"] == len(records)
        assert row["prompt_tokens"] == sum(r["prompt_tokens"] for r in records)
        assert row["completion_tokens"] == sum(r["completion_tokens"] for r in records)
        costs = sum(r["cost_micro_usd"] + r["rails_cost_micro_usd"] for r in records)
        assert row["cost_micro_usd"] == costs
    for group_by, groups in (
        ("model", {"mock-1", "gpt-test", "status-429"}),
        ("key", {keys[0]["id"], keys[1]["id"]}),
    ):
        rows = report(http, tenant, group_by=group_by).json()["data"]
        assert {r["group"] for r in rows} == groups
        for field in ("requests", "prompt_tokens", "completion_tokens", "cost_micro_usd"):
            assert sum(r[field] for r in rows) == total[field]

    r = report(http, tenant, group_by="key", format="csv")
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    table = list(csv.reader(io.StringIO(r.text)))
    assert (
        tuple(table[0])
        == CSV_COLUMNS
        == (
            "group",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cost_usd",
            "errors",
            "blocked",
            "limited",
            "disconnected",
        )
    )
    as_json = report(http, tenant, group_by="key").json()["data"]
    assert [row[0] for row in table[1:]] == [row["group"] for row in as_json]
    assert sum(int(row[1]) for row in table[1:]) == total["requests"]
    assert [float(row[6]) for row in table[1:]] == [row["cost_usd"] for row in as_json]

    # The tenant reads the same report with its own key.
    own = httpx.get(gw + "/v1/usage", headers={"authorization": f"Bearer {keys[1]['key']}"})
    assert own.status_code == 200 and own.json() == body

    past = report(http, tenant, **{"from": "2020-01-01", "to": "2020-01-31"}).json()
    assert past["data"] == [] and past["total"]["requests"] == 0
    for params, param in (
        ({"from": "2024-02-10", "to": "2024-02-01"}, "to"),
        ({"from": "2020-01-01", "to": "2024-01-01"}, "from"),
        ({"from": "2024-02-30"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-1-1"}, "to"),
        ({"group_by": "hour"}, "group_by"),
    ):
        r = report(http, tenant, **params)
        assert r.status_code == 400, params
        assert error_of(r)["param"] == param
    assert http.get("/admin/v1/usage").status_code == 400  # `tenant` is required


def test_data_subject_export_and_erase(gw: str, http: httpx.Client) -> None:
    tenant = new_tenant(http)
    key = new_key(http, tenant)["key"]
    user = f"person-{uuid.uuid4().hex[:6]}@example.org"
    for text in ("one", "two"):
        chat(gw, key, text, user=user)
    chat(gw, key, "three", user="someone-else")
    path = f"/admin/v1/tenants/{tenant}/users/{user}"

    exported = eventually(lambda: (e := http.get(path + "/export").json())["count"] == 2 and e)
    assert exported["tenant"] == tenant and exported["user"] == user
    assert {r["user"] for r in exported["records"]} == {user}
    assert {r["tenant_id"] for r in exported["records"]} == {tenant}
    assert not {"prompt", "messages", "answer"} & set(exported["records"][0])
    eventually(lambda: report(http, tenant).json()["total"]["requests"] == 3)

    r = http.delete(path)
    assert r.status_code == 200 and r.json() == {"tenant": tenant, "erased": {"usage_records": 2}}
    assert http.get(path + "/export").json() == {
        "tenant": tenant,
        "user": user,
        "count": 0,
        "records": [],
    }
    rows = report(http, tenant, group_by="user").json()
    assert user not in {row["group"] for row in rows["data"]}
    assert rows["total"]["requests"] == 3  # totals stay right
    other = http.get(f"/admin/v1/tenants/{tenant}/users/someone-else/export").json()
    assert other["count"] == 1

    (entry,) = [e for e in audit_for(http, tenant) if e["action"] == "user.erase"]
    digest = hashlib.sha256(user.encode()).hexdigest()[:16]
    assert entry["details"] == {"user_sha256": digest, "usage_records": 2}
    assert user not in str(http.get("/admin/v1/audit", params={"limit": 1000}).text)


# -- audit ---------------------------------------------------------------------------


def test_every_change_is_audited_without_secrets(gw: str, http: httpx.Client) -> None:
    tenant = new_tenant(http, name="Audited")
    http.patch(f"/admin/v1/tenants/{tenant}", json={"name": "Renamed", "limits": {"rpm": 5}})
    http.post(f"/admin/v1/tenants/{tenant}/disable")
    http.post(f"/admin/v1/tenants/{tenant}/enable")
    created = new_key(http, tenant)
    rotated = http.post(f"/admin/v1/tenants/{tenant}/keys/{created['id']}/rotate", json={}).json()
    http.patch(f"/admin/v1/tenants/{tenant}/keys/{created['id']}", json={"name": "old"})
    http.delete(f"/admin/v1/tenants/{tenant}/keys/{rotated['key']['id']}")
    http.put(
        f"/admin/v1/tenants/{tenant}/policy", json={"input": [{"denylist": {"terms": ["sesame"]}}]}
    )
    http.put(
        f"/admin/v1/tenants/{tenant}/policy", json={"output": [{"denylist": {"terms": ["x1"]}}]}
    )
    with admin_http(gw, OPS_KEY) as ops:
        ops.post(f"/admin/v1/tenants/{tenant}/policy/rollback", json={"version": 1})
        ops.delete(f"/admin/v1/tenants/{tenant}")

    entries = list(reversed(audit_for(http, tenant)))  # oldest first
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("tenant.create", "env"),
        ("tenant.update", "env"),
        ("tenant.disable", "env"),
        ("tenant.enable", "env"),
        ("key.create", "env"),
        ("key.rotate", "env"),
        ("key.update", "env"),
        ("key.revoke", "env"),
        ("policy.set", "env"),
        ("policy.set", "env"),
        ("policy.rollback", "ops"),
        ("tenant.delete", "ops"),
    ]
    assert entries[1]["details"] == {"fields": ["limits", "name"]}
    assert entries[5]["target"] == f"{tenant}/{created['id']}"
    assert entries[5]["details"]["new_key"] == rotated["key"]["id"]
    assert entries[10]["details"] == {"version": 1, "previous": 2}
    assert all(e["at"] > 0 for e in entries)
    text = http.get("/admin/v1/audit", params={"limit": 1000}).text
    for secret in (created["key"], rotated["key"]["key"], ADMIN_KEY, OPS_KEY, "sesame"):
        assert secret not in text
    assert hash_key(created["key"]) not in text

    page = http.get("/admin/v1/audit", params={"limit": 3}).json()
    assert len(page["data"]) == 3 and page["next_before"] == page["data"][-1]["at"]
    older = http.get("/admin/v1/audit", params={"limit": 3, "before": page["next_before"]})
    assert all(e["at"] < page["next_before"] for e in older.json()["data"])


# -- auth and isolation --------------------------------------------------------------


def admin_operations(gw: str) -> list[tuple[str, str]]:
    """(method, path template) of every admin operation in the served OpenAPI document."""
    doc = httpx.get(gw + "/openapi/openapi.json").json()
    found = [
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        if path.startswith("/admin/v1/")
        for method in operations
    ]
    assert len(found) >= 20
    return found


def test_openapi_names_the_keys_each_operation_takes(gw: str) -> None:
    doc = httpx.get(gw + "/openapi/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert {n: (s["type"], s["scheme"]) for n, s in schemes.items()} == {
        "adminKey": ("http", "bearer"),
        "tenantKey": ("http", "bearer"),
    }
    for path, operations in doc["paths"].items():
        if path.startswith("/admin/v1/"):
            assert all(op["security"] == [{"adminKey": []}] for op in operations.values()), path
    assert doc["paths"]["/v1/usage"]["get"]["security"] == [{"tenantKey": []}]


def fill(path: str, tenant: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: tenant if m.group() == "{tenant_id}" else "1", path)


def test_admin_auth_on_every_route(gw: str, http: httpx.Client) -> None:
    tenant = new_tenant(http)
    tenant_key = new_key(http, tenant)["key"]
    refusals = (
        ({}, 401, "invalid_api_key"),
        ({"authorization": "Bearer adm-wrong-key"}, 401, "invalid_api_key"),
        ({"x-api-key": "rg-not-a-real-key"}, 401, "invalid_api_key"),
        ({"authorization": f"Bearer {tenant_key}"}, 403, "permission_denied"),
        ({"x-api-key": CFG_KEY}, 403, "permission_denied"),
    )
    with httpx.Client(base_url=gw) as anyone:
        for method, template in admin_operations(gw):
            body = {} if method in ("POST", "PUT", "PATCH") else None
            own = fill(template, tenant)  # even the key's own tenant
            for headers, status, code in refusals:
                r = anyone.request(method, own, headers=headers, json=body)
                assert r.status_code == status, (method, own, headers, r.text)
                assert error_of(r)["code"] == code
                assert tenant_key not in r.text and CFG_KEY not in r.text
                assert r.headers["x-request-id"]
            other = fill(template, "t-none")
            r = anyone.request(method, other, headers={"x-api-key": ADMIN_KEY}, json=body)
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, other, r.text)


def test_tenant_key_sees_only_its_own_usage(gw: str, http: httpx.Client) -> None:
    a, b = new_tenant(http), new_tenant(http)
    key_a, key_b = new_key(http, a)["key"], new_key(http, b)["key"]
    chat(gw, key_a, "from a")
    for _ in range(3):
        chat(gw, key_b, "from b")
    eventually(lambda: report(http, b).json()["total"]["requests"] == 3)
    eventually(lambda: report(http, a).json()["total"]["requests"] == 1)

    as_a = {"authorization": f"Bearer {key_a}"}
    own = httpx.get(gw + "/v1/usage", headers=as_a)
    assert own.json()["tenant"] == a and own.json()["total"]["requests"] == 1
    assert httpx.get(gw + "/v1/usage", headers=as_a, params={"tenant": a}).status_code == 200
    for params in ({"tenant": b}, {"tenant": b, "format": "csv"}, {"tenant": b, "group_by": "key"}):
        r = httpx.get(gw + "/v1/usage", headers=as_a, params=params)
        assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"
        assert list(r.json()) == ["error"]  # nothing of b's report
    csv_a = httpx.get(gw + "/v1/usage", headers=as_a, params={"format": "csv"}).text
    assert sum(int(row[1]) for row in list(csv.reader(io.StringIO(csv_a)))[1:]) == 1
    assert httpx.get(gw + "/v1/usage").status_code == 401
    assert httpx.get(gw + "/v1/usage", headers={"x-api-key": ADMIN_KEY}).status_code == 401
    for path in (
        f"/admin/v1/tenants/{b}/keys",
        f"/admin/v1/tenants/{b}/policy",
        f"/admin/v1/usage?tenant={b}",
        f"/admin/v1/tenants/{b}/users/u/export",
    ):
        assert httpx.get(gw + path, headers=as_a).status_code == 403


def test_admin_access_not_configured(upstream: FakeUpstream) -> None:
    raw = config(upstream, "memory://")
    del raw["admin"]
    with serve_admin(raw, env_key=None) as url:
        for headers in ({}, {"x-api-key": ADMIN_KEY}, {"x-api-key": CFG_KEY}):
            r = httpx.get(url + "/admin/v1/tenants", headers=headers)
            assert r.status_code == 401
            assert "not configured" in error_of(r)["message"]
