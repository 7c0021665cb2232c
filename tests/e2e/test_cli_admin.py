"""`railgate tenants | keys | policy | usage` as an operator runs them: the installed
script, in its own process, against a real gateway on loopback, connected through
`RAILGATE_URL` and `RAILGATE_ADMIN_KEY`.

Each command costs a process start (~0.3 s), so every test batches its assertions on a
few invocations, and the independent error cases run side by side.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.admin.usage import CSV_COLUMNS
from gateway.cli import main
from gateway.keys import hash_key
from tests.admin_client import ADMIN_CONFIG, ADMIN_KEY, admin_http, eventually, serve_admin
from tests.conftest import KEY_ACME, gateway_config
from tests.fakes import FakeUpstream
from tests.railgate_process import RAILGATE, serve_env, write_config
from tests.servers import free_port

PII_EMAIL = "input:\n  - pii: {entities: [EMAIL_ADDRESS], action: redact}\n"
DENY_ZEUS = {"input": [{"denylist": {"terms": ["zeus"]}}]}
INVALID = "on_block: explode\ninput:\n  - denylist: {terms: zeus}\n"


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstream) -> Iterator[str]:
    raw = gateway_config(
        upstream.url,  # type: ignore[attr-defined]
        admin=ADMIN_CONFIG,
        ledger={"flush_interval_ms": 20},
    )
    with serve_admin(raw) as url:
        yield url


def railgate(
    gw: str, *args: str, key: str | None = ADMIN_KEY, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`railgate *args` with the gateway and admin key in the environment, as a user has them."""
    env = serve_env({"RAILGATE_URL": gw, **({"RAILGATE_ADMIN_KEY": key} if key else {})})
    done = subprocess.run(
        [RAILGATE, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.args, done.stderr)
    return done.stdout


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(done))


def failed(done: subprocess.CompletedProcess[str], code: int) -> list[str]:
    """The stderr lines of a command that exited with `code` (and printed nothing)."""
    assert done.returncode == code, (done.args, done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    return done.stderr.splitlines()


def secret_and_rest(stdout: str) -> tuple[str, Any]:
    """A new key's output: the secret alone on the last line, the JSON above it."""
    *head, secret = stdout.splitlines()
    assert secret.startswith("rg-") and stdout.count(secret) == 1
    return secret, json.loads("\n".join(head))


def reply(gw: str, key: str, text: str = "Hello", model: str = "mock-1") -> str | None:
    client = openai.OpenAI(base_url=gw + "/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return answer.choices[0].message.content


def works(gw: str, key: str) -> bool:
    try:
        reply(gw, key)
    except openai.AuthenticationError:
        return False
    return True


def new_id() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_tenants_and_keys_from_create_to_revoke(gw: str) -> None:
    tenant = new_id()
    made = ok_json(
        railgate(
            gw,
            *("tenants", "create", tenant, "--name", "CLI Co", "--models", "mock-1"),
            *("--metadata", "team=ml", "env=ci", "--limits", '{"rpm": 100}'),
        )
    )
    assert (made["id"], made["name"], made["source"]) == (tenant, "CLI Co", "store")
    assert made["models"] == ["mock-1"] and made["limits"] == {"rpm": 100}
    assert made["metadata"] == {"team": "ml", "env": "ci"}

    created = railgate(
        gw, "keys", "create", "--tenant", tenant, "--name", "ci", "--expires-in", "30d"
    )
    secret, key = secret_and_rest(ok(created))
    assert "key" not in key and key["name"] == "ci" and key["status"] == "active"
    assert abs(key["expires_at"] - (time.time() + 30 * 86400)) < 120
    assert "will not be shown again" in created.stderr and secret not in created.stderr
    assert reply(gw, secret) == "mock-1 heard: Hello"

    listed = railgate(gw, "keys", "list", "--tenant", tenant)
    assert [k["id"] for k in ok_json(listed)] == [key["id"]]
    table = ok(railgate(gw, "keys", "list", "--tenant", tenant, "--format", "table"))
    header, _rule, row = table.splitlines()
    assert header.split()[:4] == ["id", "name", "prefix", "status"]
    assert row.split()[:4] == [key["id"], "ci", key["prefix"] + "…", "active"]
    for out in (listed.stdout, listed.stderr, table):
        assert secret not in out and hash_key(secret) not in out

    assert ok_json(railgate(gw, "tenants", "update", tenant, "--disable"))["disabled"] is True
    assert not works(gw, secret)
    updated = ok_json(
        railgate(gw, "tenants", "update", tenant, "--enable", "--name", "CLI 2", "--models", "*")
    )
    assert (updated["disabled"], updated["name"], updated["models"]) == (False, "CLI 2", None)
    assert updated["metadata"] == {"team": "ml", "env": "ci"}  # left out: kept
    assert works(gw, secret)

    rotated = railgate(gw, "keys", "rotate", "--tenant", tenant, key["id"], "--grace", "0")
    new_secret, both = secret_and_rest(ok(rotated))
    assert "key" not in both["key"] and both["old"]["replaced_by"] == both["key"]["id"]
    assert both["old"]["status"] == "expired" and "will not be shown again" in rotated.stderr
    assert not works(gw, secret) and works(gw, new_secret)

    revoked = ok_json(railgate(gw, "keys", "revoke", "--tenant", tenant, both["key"]["id"]))
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    assert not works(gw, new_secret)

    # `python -m gateway` is the same program; --create-tenant creates through the API
    other = new_id()
    env = serve_env({"RAILGATE_URL": gw, "RAILGATE_ADMIN_KEY": ADMIN_KEY})
    module = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--tenant", other, "--create-tenant"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    other_secret, _ = secret_and_rest(ok(module))
    assert works(gw, other_secret)
    listing = ok(railgate(gw, "tenants", "list", "--format", "table"))
    ids = [line.split()[0] for line in listing.splitlines()[2:]]
    assert {tenant, other, "acme"} <= set(ids) and ids == sorted(ids)

    refused = failed(railgate(gw, "tenants", "delete", other), 2)
    assert "--yes" in refused[0] and works(gw, other_secret)
    assert ok(railgate(gw, "tenants", "delete", other, "--yes")).startswith("deleted tenant")
    (gone,) = failed(railgate(gw, "tenants", "get", other), 1)
    assert gone == "railgate: 404 not_found [tenant_id]: Unknown tenant."
    assert not works(gw, other_secret)


def test_policy_set_invalid_versions_rollback_and_dry_run(gw: str, tmp_path: Path) -> None:
    tenant = new_id()
    ok(railgate(gw, "tenants", "create", tenant))
    (tmp_path / "pii.yaml").write_text(PII_EMAIL)
    (tmp_path / "bad.yaml").write_text(INVALID)

    first = ok_json(railgate(gw, "policy", "set", "--tenant", tenant, str(tmp_path / "pii.yaml")))
    assert first["version"] == 1 and first["active"] and first["author"] == "env"
    problems = failed(
        railgate(gw, "policy", "set", "--tenant", tenant, str(tmp_path / "bad.yaml")), 1
    )
    assert problems[0].startswith("railgate: 422 invalid_policy: ")
    paths = {line.removeprefix("railgate:   ").split(": ")[0] for line in problems[1:]}
    assert paths == {"$.on_block", "$.input[0].denylist.terms"}  # one line per problem
    second = ok_json(
        railgate(gw, "policy", "set", "--tenant", tenant, "-", stdin=json.dumps(DENY_ZEUS))
    )
    assert second["version"] == 2

    versions = ok_json(railgate(gw, "policy", "versions", "--tenant", tenant))
    assert [(v["version"], v["active"]) for v in versions] == [(1, False), (2, True)]
    back = ok_json(railgate(gw, "policy", "rollback", "--tenant", tenant, "1"))
    assert back["version"] == 1 and back["active"]
    active = ok_json(railgate(gw, "policy", "get", "--tenant", tenant))
    assert (active["source"], active["version"]) == ("store", 1)
    assert active["document"]["input"][0]["pii"]["entities"] == ["EMAIL_ADDRESS"]
    old = ok_json(railgate(gw, "policy", "get", "--tenant", tenant, "--version", "2", "--document"))
    assert old == DENY_ZEUS
    table = ok(railgate(gw, "policy", "versions", "--tenant", tenant, "--format", "table"))
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["1", "2"]
    assert table.splitlines()[2].rstrip().endswith("*")  # v1 is active again

    sent = "Write to alice@example.com today"
    dry = railgate(gw, "policy", "dry-run", "--tenant", tenant, "--message", sent)
    result = ok_json(dry)
    assert result["messages"] == [{"role": "user", "content": "Write to <EMAIL_ADDRESS> today"}]
    assert result["verdict"]["outcome"] == "allowed" and "alice@example.com" not in dry.stdout
    shown = ok(
        railgate(
            gw,
            *("policy", "dry-run", "--policy", "-", "--message", "About Zeus"),
            *("--format", "table"),
            stdin=json.dumps(DENY_ZEUS),
        )
    )
    assert "verdict:  blocked at input by denylist" in shown


def test_usage_report_as_table_csv_and_json(gw: str) -> None:
    tenant = new_id()
    ok(railgate(gw, "tenants", "create", tenant))
    secret, _ = secret_and_rest(ok(railgate(gw, "keys", "create", "--tenant", tenant)))
    for model in ("mock-1", "mock-1", "gpt-test"):
        reply(gw, secret, model=model)
    with admin_http(gw) as http:
        report = eventually(
            lambda: (
                (r := http.get("/admin/v1/usage", params={"tenant": tenant, "group_by": "model"}))
                and r.json()["total"]["requests"] == 3
                and r.json()
            )
        )

    table = ok(railgate(gw, "usage", "--tenant", tenant, "--group-by", "model")).splitlines()
    assert table[0] == f"usage of {tenant}, {report['from']} to {report['to']}, by model"
    header = table[1].split()
    assert header == [
        *("group", "requests", "prompt", "completion", "cost", "USD"),
        *("errors", "blocked", "limited"),
    ]
    assert set(table[2]) == {"-", " "} and table[-2] == table[2]
    rows = {line.split()[0]: line.split() for line in table[3:-2]}
    assert set(rows) == {"gpt-test", "mock-1"}
    total = table[-1].split()
    assert total[0] == "total" and total[1:4] == [
        str(report["total"][c]) for c in ("requests", "prompt_tokens", "completion_tokens")
    ]
    micro = report["total"]["cost_micro_usd"]
    assert micro > 0 and total[4] == f"{micro // 1_000_000}.{micro % 1_000_000:06d}"
    assert len({len(line) for line in table[1:] if line.startswith("-")}) == 1  # aligned

    raw = ok(railgate(gw, "usage", "--tenant", tenant, "--group-by", "model", "--format", "csv"))
    parsed = list(csv.reader(io.StringIO(raw)))
    assert tuple(parsed[0]) == CSV_COLUMNS
    assert sorted(r[0] for r in parsed[1:]) == ["gpt-test", "mock-1"]
    assert sum(int(r[1]) for r in parsed[1:]) == 3

    as_json = railgate(gw, "usage", "--tenant", tenant, "--group-by", "model", "--format", "json")
    assert ok_json(as_json) == report


def test_errors_exit_codes_and_the_admin_key_never_shown(gw: str, tmp_path: Path) -> None:
    wrong = "adm-wrong-" + "w" * 30
    config = write_config(tmp_path / "c.yaml", {"store": "memory://"})
    unreachable = f"http://127.0.0.1:{free_port()}"
    cases = {
        "wrong key": (("tenants", "list"), wrong),
        "tenant key": (("tenants", "list"), KEY_ACME),
        "no key": (("tenants", "list"), None),
        "unreachable": (("tenants", "list", "--url", unreachable), ADMIN_KEY),
        "bad model": (("tenants", "create", new_id(), "--models", "nope"), ADMIN_KEY),
        "bad limits": (("tenants", "create", new_id(), "--limits", "{bad"), ADMIN_KEY),
        "bad duration": (("keys", "create", "--tenant", "acme", "--expires-in", "soon"), ADMIN_KEY),
        "no policy": (("policy", "dry-run", "--message", "hi"), ADMIN_KEY),
        "missing file": (("policy", "set", "--tenant", "acme", str(tmp_path / "no")), ADMIN_KEY),
        "both modes": (
            ("keys", "create", "--tenant", "acme", "--config", str(config), "--url", gw),
            ADMIN_KEY,
        ),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(railgate, gw, *a, key=k) for name, (a, k) in cases.items()}
        done = {name: future.result() for name, future in futures.items()}

    for run in done.values():
        for secret in (wrong, KEY_ACME, ADMIN_KEY):
            assert secret not in run.stdout + run.stderr
    assert failed(done["wrong key"], 1) == [
        "railgate: 401 invalid_api_key: Invalid admin key.",
        "railgate:   check --admin-key or $RAILGATE_ADMIN_KEY",
    ]
    assert failed(done["tenant key"], 1) == [
        "railgate: 403 permission_denied: Tenant keys cannot use the admin API."
    ]
    (line,) = failed(done["no key"], 2)
    assert "RAILGATE_ADMIN_KEY" in line and "--admin-key" in line
    (line,) = failed(done["unreachable"], 1)
    assert line.startswith(f"railgate: cannot reach the gateway at {unreachable}: ")
    (line,) = failed(done["bad model"], 1)
    assert line == "railgate: 400 invalid_request [models]: Unknown model 'nope' in `models`."
    assert "--limits: not JSON" in failed(done["bad limits"], 2)[-1]
    assert "--expires-in: not a duration" in failed(done["bad duration"], 2)[-1]
    assert failed(done["no policy"], 2) == ["railgate: give --tenant, --policy FILE, or both"]
    (line,) = failed(done["missing file"], 2)
    assert line.startswith("railgate: cannot read ") and "No such file" in line
    (line,) = failed(done["both modes"], 2)
    assert "--config" in line and "--url" in line


def test_keys_create_with_config_writes_the_store_even_with_a_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--config` keeps the offline path: no gateway is called, `$RAILGATE_URL` or not."""
    monkeypatch.setenv("RAILGATE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    path = write_config(tmp_path / "c.yaml", {"store": "memory://", "tenants": [{"id": "acme"}]})
    argv = ["keys", "create", "--tenant", "acme", "--expires-in", "12h", "--config", str(path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    secret = out.splitlines()[-1]
    assert out.splitlines()[0].startswith("key id: key_") and secret.startswith("rg-")
    assert hash_key(secret) in err and secret not in err  # the memory:// hint
