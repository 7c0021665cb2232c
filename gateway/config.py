"""Settings: one frozen, typed tree loaded once from YAML plus the environment.

`load_settings()` reads the file named by `--config` / `RAILGATE_CONFIG` (else the
bundled default), applies `RAILGATE_<A>__<B>` environment overrides, converts the
result into `Settings` and checks cross references. Any problem raises `ConfigError`
carrying the field path and the reason, so the CLI can stop with one clear line.
Secrets are never in the file: a provider names the variable that holds its key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from gateway.limits.spec import LimiterSettings, Limits, ModelLimits, ProviderLimits
from gateway.pricing import ModelPrice
from rails.policy import PolicyError, parse_policy

__all__ = [
    "AdminKeyEntry",
    "AdminSettings",
    "ConfigError",
    "ExportSettings",
    "KeyEntry",
    "LangfuseSettings",
    "LedgerSettings",
    "ModelRoute",
    "ProviderConfig",
    "ServerConfig",
    "Settings",
    "TelemetrySettings",
    "TenantConfig",
    "TenantId",
    "default_config_path",
    "load_settings",
    "parse_settings",
]

ENV_PREFIX = "RAILGATE_"
ProviderType = Literal["openai", "anthropic", "mock"]


class ConfigError(Exception):
    """A configuration value is missing or wrong; `path` says where (e.g. `$.models[1].provider`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Interface `railgate serve` binds to."""
    port: int = 8080
    """TCP port `railgate serve` listens on."""
    workers: int = 1
    """Worker processes; more than one needs a shared (redis://) store."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Request bodies above this size are refused with 413."""


class ProviderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    """Name that models refer to."""
    type: ProviderType
    """Wire protocol: `openai` (any OpenAI-compatible server), `anthropic`, or built-in `mock`."""
    base_url: str = ""
    """Upstream API root, e.g. `https://api.openai.com/v1`."""
    api_key_env: str | None = None
    """Environment variable holding the upstream API key."""
    optional: bool = False
    """Skip this provider (and its models) when `api_key_env` is unset, instead of failing."""
    timeout_s: float = 600.0
    """Upper bound for one upstream read (time between bytes) and for connecting."""
    max_connections: int = 512
    """Size of the shared connection pool to this upstream."""
    limits: ProviderLimits | None = None
    """The provider account's own limits (`rpm`, `tpm`, `max_queue_wait_ms`): the gateway
    paces requests across replicas so the provider never has to answer 429."""


class ModelRoute(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    """Model name clients send."""
    provider: str
    """Provider that serves it."""
    upstream_model: str | None = None
    """Model name sent upstream (default: `name`)."""
    input_price_per_mtok: float = 0.0
    """USD per million prompt tokens."""
    output_price_per_mtok: float = 0.0
    """USD per million completion tokens."""

    @property
    def target(self) -> str:
        return self.upstream_model or self.name


class KeyEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key_sha256: str
    """Lower-case hex SHA-256 of the full key (`rg-…`)."""
    name: str = ""
    """Label shown in reports."""
    limits: Limits | None = None
    """This key's own limits, on top of its tenant's."""


class LangfuseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str
    """Langfuse base URL, e.g. `http://langfuse:3000` (self-hosted) or `https://cloud.langfuse.com`."""
    public_key_env: str = "LANGFUSE_PUBLIC_KEY"
    """Environment variable holding the project's public key (`pk-lf-…`)."""
    secret_key_env: str = "LANGFUSE_SECRET_KEY"
    """Environment variable holding the project's secret key (`sk-lf-…`)."""
    send_content: bool = True
    """Send the prompt as sent upstream (after redaction) and the provider's answer as
    received (before pseudonyms are restored); `false` sends ids, usage and cost only."""


class ExportSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    queue_spans: Annotated[int, msgspec.Meta(ge=1)] = 20_000
    """Spans waiting for export per destination; beyond, new ones are dropped (counted in
    `railgate_telemetry_dropped_total`)."""
    batch_spans: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 512
    """Most spans sent in one export request."""
    interval_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 1_000
    """Longest a span waits before its batch is sent."""
    timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 5_000
    """An export request not answered within this long fails; its spans are dropped."""
    shutdown_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 2.0
    """On shutdown, how long to keep exporting before the rest is dropped."""


class TelemetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    langfuse: LangfuseSettings | None = None
    """The default Langfuse project for every tenant without its own; `None`: no Langfuse."""
    export: ExportSettings = ExportSettings()
    """Queues and batches of the span exporters (OTLP and Langfuse)."""
    access_log: bool = True
    """One JSON line per request on the `railgate.access` logger."""
    log_format: Literal["json", "text"] = "json"
    """Application and access logs as JSON lines, or plain text for a terminal."""


class AdminKeyEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    """Name of the admin key in the audit log (e.g. `ops-alice`)."""
    key_sha256: str
    """Lower-case hex SHA-256 of the admin key."""


class AdminSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keys: tuple[AdminKeyEntry, ...] = ()
    """Hashed admin keys, besides `RAILGATE_ADMIN_KEY` from the environment."""
    key_env: str = "RAILGATE_ADMIN_KEY"
    """Environment variable holding an admin key (audited as `env`)."""


TenantId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
"""A tenant id, in the config file and the admin API alike: it names store keys, and a
`{`, `}` or `:` in it would break the `{tenant}` hash tag that keeps each limits script
on one Redis Cluster slot."""


class TenantConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: TenantId
    """Stable tenant id used in keys, reports and limits."""
    name: str = ""
    """Display name."""
    models: tuple[str, ...] | None = None
    """Models this tenant may call; `None` allows every configured model."""
    keys: tuple[KeyEntry, ...] = ()
    """Keys kept in the file (GitOps); run-time keys live in the store."""
    policy: dict[str, Any] | None = None
    """This tenant's rails policy (see `rails.policy`); `None` uses `default_policy`."""
    limits: Limits | None = None
    """`{rpm, rps, tpm, concurrency, budget_usd_day, budget_usd_month, fail_mode}`."""
    model_limits: dict[str, ModelLimits] | None = None
    """`{<model>: {rpm, tpm}}`: this tenant's limits per model."""
    langfuse: LangfuseSettings | None = None
    """This tenant's own Langfuse project (instead of `telemetry.langfuse`)."""
    prices: dict[str, ModelPrice] | None = None
    """`{<model>: {input_price_per_mtok, output_price_per_mtok}}`: this tenant's own prices."""


class RailsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str | None = None
    """Model (of `models`) that LLM-based rails call, e.g. NeMo self-check prompts."""
    model_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 10_000
    """Deadline of one rails-model call."""
    configs_dir: str | None = None
    """Directory of tenant NeMo configs (`<dir>/<name>/config.yml`), besides the bundled."""


class LedgerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30
    """Days the raw usage records (the log) are kept."""
    totals_retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 400
    """Days the per-day totals (reports by day, model, key, end user) are kept."""
    buffer_records: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Records held in memory while the store cannot be written; beyond, new ones are
    dropped (counted in `railgate_usage_dropped_total`)."""
    batch_records: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    """Most records written in one store call."""
    flush_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 50
    """Longest a record waits in the buffer before a write is started."""
    write_timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 2_000
    """A write not answered within this long counts as failed and is retried."""
    retry_max_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 2_000
    """Longest pause between retries while the store is down (backoff from 50 ms)."""
    shutdown_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 5.0
    """On shutdown, how long to keep writing the buffer before the rest is dropped."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    """HTTP server options."""
    store: str = "memory://"
    """State store URL: `memory://`, `redis://host:port/db` or `rediss://…`."""
    providers: tuple[ProviderConfig, ...] = ()
    """Upstream LLM providers."""
    models: tuple[ModelRoute, ...] = ()
    """Client-visible models and their routes."""
    tenants: tuple[TenantConfig, ...] = ()
    """Tenants defined in the file."""
    default_policy: dict[str, Any] | None = None
    """Rails policy for tenants without their own; `None`: no rails."""
    nlp_model: str | None = None
    """Installed spaCy model for PII NER (e.g. `en_core_web_lg`); `None`: patterns only."""
    rails: RailsSettings = RailsSettings()
    """Rails that call a model (NeMo): which model, its deadline, tenant configs."""
    limiter: LimiterSettings = LimiterSettings()
    """How limits talk to the store: deadline, lease time, default output reservation."""
    ledger: LedgerSettings = LedgerSettings()
    """The usage ledger: retention, and how records are buffered and written."""
    admin: AdminSettings = AdminSettings()
    """Who may use the admin API (`/admin/v1`)."""
    telemetry: TelemetrySettings = TelemetrySettings()
    """Langfuse, span export queues, access log and log format (OpenTelemetry itself is
    configured by the standard `OTEL_*` variables)."""
    source: str = ""
    """Where these settings were loaded from (set by the loader)."""


def default_config_path() -> Path:
    """The bundled `railgate.yaml` (the same file as the repository's `config/railgate.yaml`)."""
    return Path(str(resources.files("gateway").joinpath("defaults/railgate.yaml")))


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load, override from `env` (default `os.environ`) and validate; raise `ConfigError`."""
    env = os.environ if env is None else env
    chosen = Path(path) if path else Path(env.get("RAILGATE_CONFIG") or default_config_path())
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(chosen), f"cannot read file ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        raise ConfigError(f"{chosen} {where}", "invalid YAML") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("$", "the top level must be a mapping")
    _apply_env_overrides(raw, env)
    raw["source"] = str(chosen)
    return parse_settings(raw, env)


def parse_settings(raw: dict[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Convert a plain mapping into `Settings`, dropping optional providers without keys."""
    env = os.environ if env is None else env
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message, sep, path = str(exc).rpartition(" - at `")
        if sep:
            raise ConfigError(_name_dict_key(raw, path.rstrip("`")), message) from exc
        raise ConfigError("$", str(exc)) from exc
    _check(settings, env)
    return _drop_disabled_providers(settings, env)


_TYPED_DICTS: dict[str, type[msgspec.Struct]] = {"model_limits": ModelLimits, "prices": ModelPrice}
"""Mappings whose values are structs: msgspec reports their keys as `[...]`."""
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _name_dict_key(raw: Any, path: str) -> str:
    """`$.tenants[0].model_limits[...].tpm` → `$.tenants[0].model_limits.gpt-4o.tpm`."""
    head, sep, tail = path.partition("[...]")
    node, name = raw, ""
    for field, index in _SEGMENT.findall(head.removeprefix("$")):
        name = field
        try:
            node = node[field] if field else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return path
    kind = _TYPED_DICTS.get(name)
    if not sep or kind is None or not isinstance(node, dict):
        return path
    for key, value in node.items():
        try:
            msgspec.convert(value, kind, strict=False)
        except msgspec.ValidationError:
            return f"{head}.{key}{tail}"
    return path


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "RAILGATE_CONFIG":
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        # Only variables naming a top-level setting are overrides, so other RAILGATE_*
        # variables (secrets such as an admin key) never trip the unknown-field check.
        if parts and parts[0] in Settings.__struct_fields__:
            _set_path(raw, parts, _env_value(value), name)


def _env_value(value: str) -> Any:
    """A YAML scalar (`9000` → int, `true` → bool); text that is not YAML stays a string."""
    if not value:
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _set_path(node: Any, parts: list[str], value: Any, origin: str) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(origin, f"no list item {part!r} to override")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(origin, f"cannot override inside a scalar at {part!r}")


def _drop_disabled_providers(settings: Settings, env: Mapping[str, str]) -> Settings:
    disabled = {
        p.name
        for p in settings.providers
        if p.optional and p.api_key_env and not env.get(p.api_key_env)
    }
    if not disabled:
        return settings
    return msgspec.structs.replace(
        settings,
        providers=tuple(p for p in settings.providers if p.name not in disabled),
        models=tuple(m for m in settings.models if m.provider not in disabled),
    )


def _check(settings: Settings, env: Mapping[str, str]) -> None:
    server = settings.server
    if not 0 < server.port < 65536:
        raise ConfigError("$.server.port", "must be between 1 and 65535")
    if server.workers < 1:
        raise ConfigError("$.server.workers", "must be at least 1")
    if server.max_body_bytes < 1024:
        raise ConfigError("$.server.max_body_bytes", "must be at least 1024")
    if not settings.store.startswith(("memory://", "redis://", "rediss://")):
        raise ConfigError("$.store", "must start with memory://, redis:// or rediss://")
    if server.workers > 1 and settings.store.startswith("memory://"):
        raise ConfigError("$.server.workers", "more than one worker needs a redis:// store")

    providers: set[str] = set()
    for i, p in enumerate(settings.providers):
        at = f"$.providers[{i}]"
        if p.name in providers:
            raise ConfigError(f"{at}.name", f"duplicate provider {p.name!r}")
        providers.add(p.name)
        if p.type != "mock" and not p.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{at}.base_url", "must be an http:// or https:// URL")
        if p.api_key_env and not p.optional and not env.get(p.api_key_env):
            raise ConfigError(
                f"{at}.api_key_env", f"environment variable {p.api_key_env} is not set"
            )
        if p.timeout_s <= 0:
            raise ConfigError(f"{at}.timeout_s", "must be positive")
        if p.max_connections < 1:
            raise ConfigError(f"{at}.max_connections", "must be at least 1")

    models: set[str] = set()
    for i, m in enumerate(settings.models):
        at = f"$.models[{i}]"
        if m.name in models:
            raise ConfigError(f"{at}.name", f"duplicate model {m.name!r}")
        models.add(m.name)
        if m.provider not in providers:
            raise ConfigError(f"{at}.provider", f"unknown provider {m.provider!r}")
        if m.input_price_per_mtok < 0 or m.output_price_per_mtok < 0:
            raise ConfigError(at, "prices cannot be negative")

    _check_langfuse("$.telemetry.langfuse", settings.telemetry.langfuse, env)
    admin_ids: set[str] = set()
    for i, a in enumerate(settings.admin.keys):
        if not a.id or a.id in admin_ids or a.id == "env":
            raise ConfigError(f"$.admin.keys[{i}].id", "must be non-empty, unique and not `env`")
        admin_ids.add(a.id)
        digest = a.key_sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"$.admin.keys[{i}].key_sha256", "must be 64 hex characters")
    _check_policy("$.default_policy", settings.default_policy)
    tenants: set[str] = set()
    hashes: set[str] = set()
    for i, t in enumerate(settings.tenants):
        at = f"$.tenants[{i}]"
        if not t.id or t.id in tenants:
            raise ConfigError(f"{at}.id", "must be non-empty and unique")
        tenants.add(t.id)
        _check_policy(f"{at}.policy", t.policy)
        _check_langfuse(f"{at}.langfuse", t.langfuse, env)
        for j, name in enumerate(t.models or ()):
            if name not in models:
                raise ConfigError(f"{at}.models[{j}]", f"unknown model {name!r}")
        for field, named in (("model_limits", t.model_limits), ("prices", t.prices)):
            for name in named or {}:
                if name not in models:
                    raise ConfigError(f"{at}.{field}.{name}", f"unknown model {name!r}")
        for j, k in enumerate(t.keys):
            digest = k.key_sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{at}.keys[{j}].key_sha256", "must be 64 hex characters")
            if digest in hashes:
                raise ConfigError(f"{at}.keys[{j}].key_sha256", "duplicate key")
            hashes.add(digest)


def _check_langfuse(at: str, langfuse: LangfuseSettings | None, env: Mapping[str, str]) -> None:
    if langfuse is None:
        return
    if not langfuse.host.startswith(("http://", "https://")):
        raise ConfigError(f"{at}.host", "must be an http:// or https:// URL")
    for field in ("public_key_env", "secret_key_env"):
        name = getattr(langfuse, field)
        if not env.get(name):
            raise ConfigError(f"{at}.{field}", f"environment variable {name} is not set")


def _check_policy(at: str, document: dict[str, Any] | None) -> None:
    if document is None:
        return
    try:
        parse_policy(document)
    except PolicyError as exc:
        path, reason = exc.problems[0]
        raise ConfigError(at + path.removeprefix("$"), reason) from exc
