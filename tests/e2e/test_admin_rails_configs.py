"""NeMo rails configs through the admin API, on real servers: `memory://` (one gateway)
and the local Redis (two gateways sharing it, as two replicas: uploads and policies go
to A, calls to B).

A config is uploaded as JSON (config.yml + a Colang-only input rail refusing a keyword,
no model and no Python), a tenant's policy names it like a bundled one, and the
`openai` SDK sees the block; a new version moves the keyword and the next call (on A at
once, on B within a second) follows it. Broken uploads (Colang syntax, an expression
that cannot run, an undefined rail, Python files, forbidden YAML keys, a bundled name)
are refused with paths and leave the latest version running; a policy naming a config
that is not stored is 422 and the old policy stays.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.admin_client import admin_http, eventually, serve_admin
from tests.conftest import REDIS_URL, gateway_config
from tests.fakes import FakeUpstream
from tests.local_redis import redis_prefix

CONFIG_YML = "rails:\n  input:\n    flows:\n      - keyword check\n"


def keyword_rail(word: str) -> str:
    return (
        "define flow keyword check\n"
        f'  if "{word}" in $user_message\n'
        "    bot refuse to respond\n"
        "    stop\n"
    )


def upload(word: str, **extra: str) -> dict[str, Any]:
    return {"files": {"config.yml": CONFIG_YML, "rails.co": keyword_rail(word), **extra}}


@pytest.fixture(scope="module", params=["memory", "redis"])
def replicas(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[tuple[str, str]]:
    """(A, B): the gateway the admin talks to and the one clients call (the same one on
    `memory://`)."""
    if request.param == "memory":
        raw = gateway_config(upstream.url, store="memory://")  # type: ignore[attr-defined]
        with serve_admin(raw) as url:
            yield url, url
        return
    with redis_prefix("rgtest-admin-rails") as prefix:
        store = f"{REDIS_URL}?prefix={prefix}"
        raw = gateway_config(upstream.url, store=store)  # type: ignore[attr-defined]
        with serve_admin(raw) as a, serve_admin(raw) as b:
            yield a, b


@pytest.fixture
def http(replicas: tuple[str, str]) -> Iterator[httpx.Client]:
    with admin_http(replicas[0]) as client:
        yield client


def new_name(stem: str = "kw") -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def tenant_with_key(http: httpx.Client) -> tuple[str, str]:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    assert http.post("/admin/v1/tenants", json={"id": tenant}).status_code == 201
    made = http.post(f"/admin/v1/tenants/{tenant}/keys", json={})
    assert made.status_code == 201, made.text
    return tenant, made.json()["key"]


def set_policy(http: httpx.Client, tenant: str, config: str) -> httpx.Response:
    policy = {"input": [{"nemo": {"config": config}}]}
    return http.put(f"/admin/v1/tenants/{tenant}/policy", json=policy)


def blocked(url: str, key: str, text: str) -> bool:
    """True when the gateway refuses the prompt with `content_filter`, False when it
    answers."""
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        try:
            client.chat.completions.create(
                model="mock-1", messages=[{"role": "user", "content": text}]
            )
        except openai.BadRequestError as exc:
            assert exc.code == "content_filter", exc
            return True
    return False


def follows(url: str, key: str, *, blocks: str, passes: str) -> bool:
    return blocked(url, key, blocks) and not blocked(url, key, passes)


def details_of(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_rails_config", error
    return {d["path"]: d["reason"] for d in error["details"]}


def test_upload_reference_block_and_new_version(
    replicas: tuple[str, str], http: httpx.Client
) -> None:
    a, b = replicas
    name = new_name()
    r = http.put(f"/admin/v1/rails-configs/{name}", json=upload("falcon"))
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["name"], got["version"], got["author"]) == (name, 1, "env")
    assert got["file_names"] == ["config.yml", "rails.co"] and got["created_at"] > 0

    tenant, key = tenant_with_key(http)
    r = set_policy(http, tenant, name)
    assert r.status_code == 200, r.text
    assert follows(a, key, blocks="the falcon lands at dawn", passes="hello there")
    assert eventually(lambda: follows(b, key, blocks="a falcon", passes="an osprey"), 5)

    r = http.put(f"/admin/v1/rails-configs/{name}", json=upload("osprey"))
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    started = time.monotonic()
    assert follows(a, key, blocks="an osprey", passes="a falcon")  # the answering replica: at once
    eventually(lambda: follows(b, key, blocks="an osprey", passes="a falcon"), 5)
    assert time.monotonic() - started < 1.5  # every replica within a second (+ the calls)

    listed = {c["name"]: c for c in http.get("/admin/v1/rails-configs").json()["data"]}
    assert listed[name]["version"] == 2 and listed[name]["file_names"] == ["config.yml", "rails.co"]
    latest = http.get(f"/admin/v1/rails-configs/{name}").json()
    assert latest["version"] == 2 and latest["files"] == upload("osprey")["files"]
    first = http.get(f"/admin/v1/rails-configs/{name}", params={"version": 1}).json()
    assert first["version"] == 1 and "falcon" in first["files"]["rails.co"]
    missing = http.get(f"/admin/v1/rails-configs/{name}", params={"version": 9})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "version"
    assert http.get(f"/admin/v1/rails-configs/{new_name()}").status_code == 404

    audit = http.get("/admin/v1/audit", params={"limit": 1000}).json()["data"]
    sets = [e for e in audit if e["action"] == "rails_config.set" and e["target"] == name]
    assert [e["details"] for e in reversed(sets)] == [{"version": 1}, {"version": 2}]
    assert "osprey" not in str(sets)


BROKEN: list[tuple[str, dict[str, str], str, str]] = [
    # (case, files replacing the good ones, path, a word of the reason)
    (
        "colang syntax",
        {"rails.co": "define flow keyword check\n  bott refuse\n"},
        "rails.co",
        "bott",
    ),
    (
        "expression",
        {"rails.co": 'define flow keyword check\n  if "osprey in $user_message\n    stop\n'},
        "rails.co",
        "Line 2",
    ),
    ("not colang", {"rails.co": "this is not Colang at all ((\n"}, "rails.co", "Colang 1.0"),
    (
        "unknown action",
        {"rails.co": "define flow keyword check\n  $r = execute run_my_code\n"},
        "rails.co",
        "run_my_code",
    ),
    ("python", {"actions.py": "import os\n"}, "actions.py", "Python"),
    ("yaml", {"config.yml": "rails: [\n"}, "config.yml", "YAML"),
    ("models", {"config.yml": CONFIG_YML + "models: []\n"}, "config.yml", "models"),
    ("import paths", {"config.yml": CONFIG_YML + "import_paths: [/etc]\n"}, "config.yml", "import"),
    ("colang 2", {"config.yml": CONFIG_YML + "colang_version: '2.x'\n"}, "config.yml", "2.x"),
    ("directory", {"kb/notes.md": "# x\n"}, "kb/notes.md", "directories"),
]


def test_broken_uploads_get_422_and_keep_the_latest_version(
    replicas: tuple[str, str], http: httpx.Client
) -> None:
    a, b = replicas
    name = new_name()
    base = f"/admin/v1/rails-configs/{name}"
    assert http.put(base, json=upload("osprey")).status_code == 200
    tenant, key = tenant_with_key(http)
    assert set_policy(http, tenant, name).status_code == 200

    for case, files, path, word in BROKEN:
        body = {"files": {**upload("falcon")["files"], **files}}
        details = details_of(http.put(base, json=body))
        at = f'$.files["{path}"]'
        assert at in details, (case, details)
        assert word in details[at], (case, details)
    # An undefined rail flow is the config as a whole.
    files = {"config.yml": CONFIG_YML.replace("keyword check", "no such flow")}
    details = details_of(http.put(base, json={"files": {**upload("x")["files"], **files}}))
    assert "no such flow" in details["$.files"]
    # Names and the set of files.
    assert "$.files" in details_of(http.put(base, json={"files": {"rails.co": keyword_rail("x")}}))
    assert "$.files" in details_of(
        http.put(base, json={"files": {**upload("x")["files"], "big.md": "x" * 300_000}})
    )
    assert "$.name" in details_of(http.put("/admin/v1/rails-configs/Not_A_Name", json=upload("x")))
    taken = http.put("/admin/v1/rails-configs/blocklist", json=upload("x"))
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    assert http.put(base, json={"files": "config.yml"}).status_code == 400  # not the schema

    assert http.get(base).json()["version"] == 1
    assert http.get("/admin/v1/rails-configs/blocklist").status_code == 404
    for url in (a, b):
        assert follows(url, key, blocks="an osprey", passes="a falcon")


def test_a_policy_naming_an_unknown_config_is_refused(
    replicas: tuple[str, str], http: httpx.Client
) -> None:
    a, b = replicas
    tenant, key = tenant_with_key(http)
    policy = f"/admin/v1/tenants/{tenant}/policy"
    assert http.put(policy, json={"input": [{"denylist": {"terms": ["zeus"]}}]}).status_code == 200
    name = new_name("later")

    r = set_policy(http, tenant, name)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_policy" and name in error["details"][0]["reason"]
    assert http.get(policy).json()["version"] == 1
    assert blocked(a, key, "zeus") and not blocked(a, key, "falcon")
    eventually(lambda: blocked(b, key, "zeus") and not blocked(b, key, "falcon"), 5)

    # Once uploaded, the same policy is accepted right away by the replica that stored it.
    assert http.put(f"/admin/v1/rails-configs/{name}", json=upload("falcon")).status_code == 200
    assert set_policy(http, tenant, name).status_code == 200
    assert follows(a, key, blocks="a falcon", passes="zeus")
    eventually(lambda: follows(b, key, blocks="a falcon", passes="zeus"), 5)
