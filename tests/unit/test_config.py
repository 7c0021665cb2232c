"""`load_settings`: the bundled default, environment overrides, one clear error per mistake;
and the CLI commands built on it (`config validate`, `keys create`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from gateway.cli import main
from gateway.config import (
    ConfigError,
    Settings,
    default_config_path,
    load_settings,
    parse_settings,
)
from tests import local_redis
from tests.conftest import REDIS_URL

MINIMAL: dict[str, Any] = {
    "providers": [{"name": "mock", "type": "mock"}],
    "models": [{"name": "mock-1", "provider": "mock"}],
}


def write(tmp_path: Path, data: Any, name: str = "railgate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def config(**changes: Any) -> dict[str, Any]:
    raw = {k: [dict(v) for v in vs] for k, vs in MINIMAL.items()}
    raw.update(changes)
    return raw


# ----------------------------------------------------------------------------- default


def test_bundled_default_runs_with_nothing_set() -> None:
    settings = load_settings(env={})
    assert settings.source == str(default_config_path())
    assert settings.store == "memory://"
    assert [p.name for p in settings.providers] == ["mock"]
    assert [m.name for m in settings.models] == ["mock-1", "mock-judge"]
    assert settings.rails.model == "mock-judge"
    assert settings.tenants == ()
    assert (settings.server.host, settings.server.port, settings.server.workers) == (
        "127.0.0.1",
        8080,
        1,
    )


def test_bundled_default_is_the_repository_example() -> None:
    repo_copy = Path(__file__).parents[2] / "config" / "railgate.yaml"
    if not repo_copy.exists():
        pytest.skip("no config/railgate.yaml in this checkout")
    assert repo_copy.read_text() == default_config_path().read_text()


def test_optional_providers_appear_when_their_key_is_set() -> None:
    settings = load_settings(env={"OPENAI_API_KEY": "sk-x"})
    assert [p.name for p in settings.providers] == ["mock", "openai"]
    models = {m.name: m.provider for m in settings.models}
    assert models["gpt-4o-mini"] == "openai" and "mock-1" in models
    assert not any(p == "anthropic" for p in models.values())
    both = load_settings(env={"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant"})
    assert [p.name for p in both.providers] == ["mock", "openai", "anthropic"]
    assert {m.provider for m in both.models} == {"mock", "openai", "anthropic"}


def test_empty_key_counts_as_unset() -> None:
    settings = load_settings(env={"OPENAI_API_KEY": ""})
    assert [p.name for p in settings.providers] == ["mock"]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, config(store="redis://10.0.0.1:6379/3"))
    settings = load_settings(env={"RAILGATE_CONFIG": str(path)})
    assert settings.source == str(path) and settings.store == "redis://10.0.0.1:6379/3"
    assert load_settings(path, env={"RAILGATE_CONFIG": "/nonexistent.yaml"}).source == str(path)


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), env={})
    assert settings.providers == () and settings.store == "memory://"


# ----------------------------------------------------------------------------- env overrides


def test_environment_overrides() -> None:
    settings = load_settings(
        env={
            "RAILGATE_STORE": "redis://127.0.0.1:6379/2?prefix=x",
            "RAILGATE_SERVER__PORT": "9001",
            "RAILGATE_SERVER__HOST": "0.0.0.0",
            "RAILGATE_SERVER__MAX_BODY_BYTES": "2048",
            "RAILGATE_PROVIDERS__0__TIMEOUT_S": "2.5",
        }
    )
    assert settings.store == "redis://127.0.0.1:6379/2?prefix=x"
    assert settings.server.port == 9001 and isinstance(settings.server.port, int)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.max_body_bytes == 2048
    assert settings.providers[0].name == "mock" and settings.providers[0].timeout_s == 2.5


def test_list_index_override_reaches_a_later_provider() -> None:
    settings = load_settings(
        env={
            "OPENAI_API_KEY": "sk-x",
            "RAILGATE_PROVIDERS__1__BASE_URL": "http://127.0.0.1:8000/v1",
        }
    )
    assert settings.providers[1].base_url == "http://127.0.0.1:8000/v1"


def test_override_of_a_missing_list_item_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"RAILGATE_PROVIDERS__9__TIMEOUT_S": "1"})
    assert info.value.path == "RAILGATE_PROVIDERS__9__TIMEOUT_S"


def test_override_with_a_wrong_type_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"RAILGATE_SERVER__PORT": "not-a-port"})
    assert info.value.path == "$.server.port"


@pytest.mark.parametrize("tenant_id", ["a{b}", "acme:prod", "", "-lead", "x" * 65, "a b"])
def test_tenant_ids_follow_the_admin_api_rule(tenant_id: str) -> None:
    # `{`/`}` would break the `{tenant}` hash tag of the limits keys on Redis Cluster.
    raw = {
        "providers": [{"name": "m", "type": "mock"}],
        "models": [{"name": "x", "provider": "m"}],
        "tenants": [{"id": tenant_id}],
    }
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, {})
    assert info.value.path == "$.tenants[0].id"
    assert parse_settings({**raw, "tenants": [{"id": "acme-prod_1.eu"}]}, {}).tenants


@pytest.mark.parametrize("value", ["*", "[::1", "@admin", "a: b: c", "`x"])
def test_override_value_that_is_not_yaml_is_a_string_or_a_config_error(value: str) -> None:
    """Values are read as YAML scalars; one that is not valid YAML must not escape as a
    raw `yaml.YAMLError` (the CLI would print a traceback instead of one clear line)."""
    try:
        settings = load_settings(env={"RAILGATE_SERVER__HOST": value})
    except ConfigError as exc:
        assert "RAILGATE_SERVER__HOST" in exc.path or exc.path == "$.server.host"
    else:
        assert settings.server.host == value


# ----------------------------------------------------------------------------- errors


def error_of(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data), env=env or {})
    return info.value


def test_invalid_yaml(tmp_path: Path) -> None:
    error = error_of(tmp_path, "server:\n  port: [1, 2\n")
    assert error.reason == "invalid YAML"
    assert error.path.startswith(str(tmp_path / "railgate.yaml")) and "line" in error.path


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "missing.yaml", env={})
    assert info.value.path == str(tmp_path / "missing.yaml")
    assert "cannot read" in info.value.reason


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    error = error_of(tmp_path, text)
    assert error.path == "$" and "mapping" in error.reason


BAD_HASH = "ab" * 31 + "zz"
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown-top-field", config(colour="red"), "$", "unknown field `colour`"),
    ("unknown-nested-field", config(server={"prot": 1}), "$.server", "unknown field `prot`"),
    (
        "unknown-model-field",
        config(models=[{"name": "m", "provider": "mock", "price": 1}]),
        "$.models[0]",
        "unknown field `price`",
    ),
    ("port-string", config(server={"port": "x"}), "$.server.port", "Expected `int`"),
    ("port-range", config(server={"port": 70000}), "$.server.port", "between"),
    ("workers-list", config(server={"workers": [1]}), "$.server.workers", "Expected `int`"),
    (
        "provider-type",
        config(providers=[{"name": "p", "type": "grok"}]),
        "$.providers[0].type",
        "Invalid enum value",
    ),
    (
        "provider-no-name",
        config(providers=[{"type": "mock"}]),
        "$.providers[0]",
        "missing required field `name`",
    ),
    (
        "unknown-provider",
        config(models=[{"name": "m", "provider": "nope"}]),
        "$.models[0].provider",
        "unknown provider 'nope'",
    ),
    (
        "duplicate-model",
        config(models=[{"name": "m", "provider": "mock"}, {"name": "m", "provider": "mock"}]),
        "$.models[1].name",
        "duplicate model 'm'",
    ),
    (
        "duplicate-provider",
        config(providers=[{"name": "mock", "type": "mock"}, {"name": "mock", "type": "mock"}]),
        "$.providers[1].name",
        "duplicate provider",
    ),
    (
        "negative-price",
        config(models=[{"name": "m", "provider": "mock", "input_price_per_mtok": -1}]),
        "$.models[0]",
        "negative",
    ),
    (
        "bad-key-hash",
        config(tenants=[{"id": "t", "keys": [{"key_sha256": BAD_HASH}]}]),
        "$.tenants[0].keys[0].key_sha256",
        "64 hex",
    ),
    (
        "short-key-hash",
        config(tenants=[{"id": "t", "keys": [{"key_sha256": "abc"}]}]),
        "$.tenants[0].keys[0].key_sha256",
        "64 hex",
    ),
    (
        "duplicate-key-hash",
        config(
            tenants=[
                {"id": "a", "keys": [{"key_sha256": "a" * 64}]},
                {"id": "b", "keys": [{"key_sha256": "A" * 64}]},
            ]
        ),
        "$.tenants[1].keys[0].key_sha256",
        "duplicate",
    ),
    (
        "tenant-unknown-model",
        config(tenants=[{"id": "t", "models": ["mock-1", "gpt-9"]}]),
        "$.tenants[0].models[1]",
        "unknown model 'gpt-9'",
    ),
    (
        "tenant-price-unknown-model",
        config(tenants=[{"id": "t", "prices": {"gpt-9": {"input_price_per_mtok": 1}}}]),
        "$.tenants[0].prices.gpt-9",
        "unknown model 'gpt-9'",
    ),
    (
        "tenant-price-negative",
        config(tenants=[{"id": "t", "prices": {"mock-1": {"output_price_per_mtok": -1}}}]),
        "$.tenants[0].prices.mock-1.output_price_per_mtok",
        ">= 0",
    ),
    (
        "langfuse-keys-unset",
        config(telemetry={"langfuse": {"host": "http://lf:3000", "public_key_env": "NOPE_PK"}}),
        "$.telemetry.langfuse.public_key_env",
        "NOPE_PK is not set",
    ),
    (
        "langfuse-bad-host",
        config(tenants=[{"id": "t", "langfuse": {"host": "lf:3000"}}]),
        "$.tenants[0].langfuse.host",
        "http",
    ),
    ("duplicate-tenant", config(tenants=[{"id": "t"}, {"id": "t"}]), "$.tenants[1].id", "unique"),
    ("workers-memory", config(server={"workers": 2}), "$.server.workers", "redis"),
    ("workers-zero", config(server={"workers": 0}), "$.server.workers", "at least 1"),
    (
        "tiny-body-limit",
        config(server={"max_body_bytes": 10}),
        "$.server.max_body_bytes",
        "at least",
    ),
    ("bad-store-scheme", config(store="postgres://db"), "$.store", "memory://"),
    ("store-not-string", config(store=5), "$.store", "Expected `str`"),
    (
        "http-provider-no-url",
        config(providers=[{"name": "o", "type": "openai"}]),
        "$.providers[0].base_url",
        "http",
    ),
    (
        "required-key-unset",
        config(
            providers=[
                {
                    "name": "o",
                    "type": "openai",
                    "base_url": "https://x/v1",
                    "api_key_env": "NOPE_KEY",
                }
            ]
        ),
        "$.providers[0].api_key_env",
        "NOPE_KEY is not set",
    ),
    (
        "timeout-zero",
        config(providers=[{"name": "mock", "type": "mock", "timeout_s": 0}]),
        "$.providers[0].timeout_s",
        "positive",
    ),
]


@pytest.mark.parametrize(
    ("raw", "path", "reason"), [pytest.param(r, p, m, id=i) for i, r, p, m in CASES]
)
def test_config_error_names_path_and_reason(
    tmp_path: Path, raw: dict[str, Any], path: str, reason: str
) -> None:
    error = error_of(tmp_path, raw)
    assert error.path == path
    assert reason in error.reason
    assert str(error) == f"{error.path}: {error.reason}"


def test_workers_with_redis_store_is_fine(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, config(server={"workers": 4}, store="redis://127.0.0.1:6379/0")), env={}
    )
    assert settings.server.workers == 4


def test_required_key_set_is_fine(tmp_path: Path) -> None:
    raw = config(
        providers=[
            {"name": "o", "type": "openai", "base_url": "https://x/v1", "api_key_env": "MY_KEY"}
        ],
        models=[{"name": "g", "provider": "o"}],
    )
    settings = load_settings(write(tmp_path, raw), env={"MY_KEY": "sk"})
    assert settings.models[0].target == "g"


def test_keys_in_file_are_accepted_in_any_case(tmp_path: Path) -> None:
    raw = config(tenants=[{"id": "t", "models": ["mock-1"], "keys": [{"key_sha256": "AB" * 32}]}])
    settings = load_settings(write(tmp_path, raw), env={})
    assert settings.tenants[0].keys[0].key_sha256 == "AB" * 32
    assert settings.tenants[0].models == ("mock-1",)


def test_settings_are_frozen() -> None:
    settings = load_settings(env={})
    assert isinstance(settings, Settings)
    with pytest.raises(AttributeError):
        settings.store = "redis://x"  # type: ignore[misc]


# ----------------------------------------------------------------------------- CLI


def test_cli_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, config())
    assert main(["config", "validate", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert str(path) in out and "1 models" in out
    assert err == ""


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (config(server={"port": "x"}), "$.server.port"),
        (config(models=[{"name": "m", "provider": "nope"}]), "$.models[0].provider"),
        ("server: [unclosed\n", "line"),
        ("- a list\n", "$"),
    ],
)
def test_cli_validate_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: Any, where: str
) -> None:
    path = write(tmp_path, raw)
    assert main(["config", "validate", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one clear line, no traceback
    assert lines[0].startswith("railgate: invalid configuration at ")
    assert where in lines[0]
    assert "Traceback" not in err


def test_cli_validate_bad_env_override(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("RAILGATE_SERVER__WORKERS", "3")
    assert main(["config", "validate", "--config", str(write(tmp_path, config()))]) == 2
    err = capsys.readouterr().err
    assert "$.server.workers" in err and "Traceback" not in err


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    with local_redis.redis_prefix() as prefix:
        yield prefix


def test_cli_keys_create_stores_only_the_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_prefix: str
) -> None:
    path = write(tmp_path, config(store=f"{REDIS_URL}?prefix={redis_prefix}"))
    argv = [
        "keys",
        "create",
        "--tenant",
        "x",
        "--create-tenant",
        "--name",
        "ci",
        "--config",
        str(path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("rg-") and len(secret) > 20
    digest = hashlib.sha256(secret.encode()).hexdigest()

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{redis_prefix}:*"))
        assert f"{redis_prefix}:key:{digest}" in keys
        assert f"{redis_prefix}:{{x}}:tenant" in keys
        stored = client.get(f"{redis_prefix}:key:{digest}")
        assert stored is not None and digest.encode() in stored
        for key in keys:
            kind = client.type(key).decode()
            values: list[bytes] = {
                "string": lambda k: [client.get(k)],
                "set": lambda k: list(client.smembers(k)),
                "hash": lambda k: [b for kv in client.hgetall(k).items() for b in kv],
            }[kind](key)
            assert all(secret.encode() not in v for v in values), key
            assert secret not in key
    finally:
        client.close()

    # a second key for the now existing tenant needs no --create-tenant
    assert main(["keys", "create", "--tenant", "x", "--config", str(path)]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second.startswith("rg-") and second != secret


def test_cli_keys_create_unknown_tenant_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_prefix: str
) -> None:
    path = write(tmp_path, config(store=f"{REDIS_URL}?prefix={redis_prefix}"))
    assert main(["keys", "create", "--tenant", "ghost", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "ghost" in err and "--create-tenant" in err
    assert "rg-" not in out
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter(match=f"{redis_prefix}:*")) == []  # nothing written
    finally:
        client.close()


def test_cli_keys_create_for_file_tenant_with_memory_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config(tenants=[{"id": "acme"}]))
    assert main(["keys", "create", "--tenant", "acme", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("rg-")
    # memory:// cannot keep it: the hint shows the hash to put in the file, never the secret
    assert hashlib.sha256(secret.encode()).hexdigest() in err
    assert secret not in err


def test_cli_bad_config_for_keys_create(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, config(store="mysql://x"))
    assert main(["keys", "create", "--tenant", "x", "--config", str(path)]) == 2
    assert "$.store" in capsys.readouterr().err


def test_other_railgate_variables_are_not_overrides(tmp_path: Path) -> None:
    """Secrets such as a future admin key share the prefix but name no top-level setting."""
    path = tmp_path / "c.yaml"
    path.write_text("store: memory://\n")
    settings = load_settings(
        path, env={"RAILGATE_ADMIN_KEY": "s3cret", "RAILGATE_STORE": "redis://h:1/0"}
    )
    assert settings.store == "redis://h:1/0"


def test_tenant_may_list_a_model_of_a_provider_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n"
        "  - {name: mock, type: mock}\n"
        "  - {name: openai, type: openai, base_url: 'https://api.openai.com/v1',"
        " api_key_env: OPENAI_API_KEY, optional: true}\n"
        "models:\n"
        "  - {name: mock-1, provider: mock}\n"
        "  - {name: gpt-4o-mini, provider: openai}\n"
        "tenants:\n"
        "  - {id: acme, models: [mock-1, gpt-4o-mini]}\n"
    )
    off = load_settings(path, env={})
    assert [m.name for m in off.models] == ["mock-1"]
    assert off.tenants[0].models == ("mock-1", "gpt-4o-mini")
    on = load_settings(path, env={"OPENAI_API_KEY": "sk-x"})
    assert [m.name for m in on.models] == ["mock-1", "gpt-4o-mini"]
    path.write_text(path.read_text().replace("[mock-1, gpt-4o-mini]", "[mock-1, gpt-5-typo]"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.path == "$.tenants[0].models[1]"
