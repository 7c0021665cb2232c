"""`railgate tenants | keys | policy | usage`: the admin API (`/admin/v1`) from a terminal.

A thin HTTP client: each command makes one or two requests and prints what came back.

    connection   --url (default $RAILGATE_URL, else http://127.0.0.1:8080) and
                 --admin-key (default $RAILGATE_ADMIN_KEY), which is never printed
    output       JSON on stdout; `--format table` where a table reads better; a new
                 key's secret alone on the last line of stdout, once
    exit codes   0 done; 1 the API refused (one line per problem on stderr) or could
                 not be reached; 2 the command line was wrong (bad option, no admin key,
                 unreadable file)

Nothing of the service (config, store, rails) is imported here, so these commands start
in the time it takes to import httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import quote

import httpx
import yaml

__all__ = ["COMMANDS", "DEFAULT_URL", "AdminApi", "add_commands", "run"]

COMMANDS = ("tenants", "keys", "policy", "usage")
"""The top-level commands this module adds (and `run` handles)."""
DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "RAILGATE_URL"
KEY_ENV = "RAILGATE_ADMIN_KEY"
_TIMEOUT_S = 60.0  # a policy's first build may load Presidio on the server
_PAGE = 500
_USAGE_COLUMNS = ("group", "requests", "prompt", "completion", "cost USD")
_USAGE_COUNTS = ("errors", "blocked", "limited")
_DURATION = re.compile(r"(\d+)([smhdw]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

Handler: TypeAlias = "Callable[[AdminApi, argparse.Namespace], int]"
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """The command line cannot work as given: exit 2, before or without a request."""


class ApiError(Exception):
    """The admin API refused, or could not be reached: exit 1. `lines` say why."""

    def __init__(self, lines: list[str], status: int | None = None) -> None:
        super().__init__(lines[0])
        self.lines = lines
        self.status = status


class AdminApi:
    """The admin API of the gateway at `url`, called with an admin key."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url + "/admin/v1",
            headers={"authorization": f"Bearer {key}"},
            timeout=_TIMEOUT_S,
        )

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def call(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """One request; `ApiError` for an error status or when the gateway is unreachable."""
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiError([f"cannot reach the gateway at {self.url}: {reason}"]) from exc
        if response.is_error:
            raise ApiError(_problems(response), response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()


def _problems(response: httpx.Response) -> list[str]:
    """One line per problem of an error answer (`{"error": {...}}`, 422 `details`)."""
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return [f"HTTP {response.status_code} from {response.url.copy_with(query=None)}: {text}"]
    param = f" [{error['param']}]" if error.get("param") else ""
    lines = [f"{response.status_code} {error.get('code') or error.get('type')}{param}: {message}"]
    lines += [f"  {d.get('path', '$')}: {d.get('reason', '')}" for d in error.get("details") or []]
    if response.status_code == 401 and "not configured" not in message:
        lines.append(f"  check --admin-key or ${KEY_ENV}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Run a parsed admin command; returns the exit code."""
    handler: Handler = args.handler
    try:
        with _connect(args) as api:
            return handler(api, args)
    except BrokenPipeError:  # `| head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UsageError as exc:
        _say(str(exc))
        return 2
    except ApiError as exc:
        for line in exc.lines:
            _say(line)
        return 1


def _connect(args: argparse.Namespace) -> AdminApi:
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    key = args.admin_key or os.environ.get(KEY_ENV)
    try:
        host = httpx.URL(url).host if url.startswith(("http://", "https://")) else ""
    except httpx.InvalidURL:
        host = ""
    if not host:
        raise UsageError(f"the gateway URL must be http://host[:port] or https://… (got {url!r})")
    if not key:
        raise UsageError(f"no admin key: set ${KEY_ENV} (or pass --admin-key)")
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        # httpx would refuse the header and quote it in its error message
        raise UsageError("the admin key must be printable ASCII without spaces")
    return AdminApi(url, key)


# -- command line --------------------------------------------------------------------


def add_commands(commands: Subcommands) -> dict[str, argparse.ArgumentParser]:
    """Add `tenants`, `keys`, `policy` and `usage` to `railgate`'s subcommands; returns
    the leaf parsers by name (`"keys create"` …) for the caller to extend."""
    conn = argparse.ArgumentParser(add_help=False)
    group = conn.add_argument_group("connection")
    group.add_argument("--url", help=f"gateway URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    group.add_argument(
        "--admin-key",
        metavar="KEY",
        help=f"admin key (default: ${KEY_ENV}; prefer it: arguments show in ps)",
    )
    leaves: dict[str, argparse.ArgumentParser] = {}

    def leaf(cmds: Subcommands, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser = cmds.add_parser(name, help=help, parents=[conn])
        parser.set_defaults(handler=handler)
        leaves[f"{cmds.dest.removesuffix('_command')} {name}"] = parser
        return parser

    def group_of(name: str, help: str) -> Subcommands:
        return commands.add_parser(name, help=help).add_subparsers(
            dest=f"{name}_command", required=True
        )

    tenants = group_of("tenants", "tenants (admin API)")
    _format_option(leaf(tenants, "list", _tenants_list, "list every tenant"), "json", "table")
    leaf(tenants, "get", _tenants_get, "show a tenant").add_argument("id")
    create = leaf(tenants, "create", _tenants_create, "create a tenant")
    update = leaf(tenants, "update", _tenants_update, "change a tenant (options given only)")
    for parser in (create, update):
        parser.add_argument("id")
        _tenant_options(parser)
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true", help="let the tenant's keys work again")
    state.add_argument("--disable", action="store_true", help="refuse the tenant's keys (401)")
    delete = leaf(tenants, "delete", _tenants_delete, "delete a tenant, its keys and policies")
    delete.add_argument("id")
    delete.add_argument("--yes", action="store_true", help="confirm without asking")

    keys = group_of("keys", "API keys (admin API; `keys create --config` works offline)")
    create = leaf(keys, "create", _keys_create, "create a key; the secret is printed once")
    create.add_argument("--tenant", required=True, help="tenant id")
    create.add_argument("--name", default="", help="label for the key")
    create.add_argument(
        "--expires-in", type=_duration, metavar="DURATION", help="lifetime, e.g. 30d, 12h, 90m"
    )
    create.add_argument("--create-tenant", action="store_true", help="create the tenant if missing")
    _format_option(leaf(keys, "list", _keys_list, "list a tenant's keys"), "json", "table")
    revoke = leaf(keys, "revoke", _keys_revoke, "revoke a key (401 from the next request on)")
    rotate = leaf(keys, "rotate", _keys_rotate, "replace a key; the new secret is printed once")
    rotate.add_argument(
        "--grace",
        type=_duration,
        metavar="DURATION",
        help="how long the old key keeps working (default 1h)",
    )
    for parser in (leaves["keys list"], revoke, rotate):
        parser.add_argument("--tenant", required=True, help="tenant id")
    for parser in (revoke, rotate):
        parser.add_argument("key_id", help="the key's id (key_…)")

    policy = group_of("policy", "rails policies (admin API)")
    get = leaf(policy, "get", _policy_get, "the policy a tenant's calls run now")
    get.add_argument("--version", type=int, help="an earlier version instead")
    get.add_argument("--document", action="store_true", help="print only the policy document")
    put = leaf(policy, "set", _policy_set, "set a tenant's policy (a new active version)")
    put.add_argument("file", help="policy document, YAML or JSON ('-': stdin)")
    versions = leaf(policy, "versions", _policy_versions, "a tenant's policy versions")
    _format_option(versions, "json", "table")
    back = leaf(policy, "rollback", _policy_rollback, "make an earlier version active")
    back.add_argument("version", type=int)
    for parser in (get, put, versions, back):
        parser.add_argument("--tenant", required=True, help="tenant id")
    dry = leaf(policy, "dry-run", _policy_dry_run, "run a policy on sample text, offline")
    dry.add_argument("--tenant", help="run this tenant's active policy (unless --policy)")
    dry.add_argument("--policy", metavar="FILE", help="run this policy document instead")
    dry.add_argument("--system", action="append", default=[], help="a system message")
    dry.add_argument("--message", action="append", default=[], help="a user message")
    dry.add_argument("--answer", help="an answer for the output stage")
    _format_option(dry, "json", "table")

    usage = commands.add_parser("usage", help="a tenant's usage report", parents=[conn])
    usage.set_defaults(handler=_usage)
    usage.add_argument("--tenant", required=True, help="tenant id")
    usage.add_argument("--from", dest="since", metavar="YYYY-MM-DD", help="first UTC day")
    usage.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="last UTC day")
    usage.add_argument("--group-by", default="day", choices=["day", "model", "key", "user"])
    _format_option(usage, "table", "csv", "json")
    return leaves


def _format_option(parser: argparse.ArgumentParser, default: str, *others: str) -> None:
    parser.add_argument("--format", default=default, choices=[default, *others])


def _tenant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="display name")
    parser.add_argument(
        "--models", metavar="A,B", help="models it may call, comma-separated ('*': every model)"
    )
    parser.add_argument(
        "--metadata",
        nargs="*",
        type=_label,
        metavar="KEY=VALUE",
        help="labels (replace the tenant's; none given: clear them)",
    )
    parser.add_argument(
        "--limits", type=_json, metavar="JSON", help="limits as JSON, e.g. '{\"rpm\": 600}'"
    )


def _duration(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30d, 12h, 90m, 45s)")
    return int(match[1]) * _SECONDS[match[2]]


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text!r}")
    return key, value


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


# -- tenants -------------------------------------------------------------------------


def _tenants_list(api: AdminApi, args: argparse.Namespace) -> int:
    tenants: list[dict[str, Any]] = []
    params = {"limit": str(_PAGE)}
    while True:
        page = api.json("GET", "/tenants", params=params)
        tenants += page["data"]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    if args.format == "json":
        _print_json(tenants)
        return 0
    header = ("id", "name", "source", "status", "models", "policy")
    rows = [
        (
            t["id"],
            t["name"],
            t["source"],
            "disabled" if t["disabled"] else "enabled",
            "*" if t["models"] is None else ",".join(t["models"]),
            "-" if t["policy_version"] is None else f"v{t['policy_version']}",
        )
        for t in tenants
    ]
    print(_table(header, rows))
    return 0


def _tenants_get(api: AdminApi, args: argparse.Namespace) -> int:
    _print_json(api.json("GET", _path("tenants", args.id)))
    return 0


def _tenants_create(api: AdminApi, args: argparse.Namespace) -> int:
    body = {"id": args.id, **_tenant_fields(args)}
    _print_json(api.json("POST", "/tenants", body=body))
    return 0


def _tenants_update(api: AdminApi, args: argparse.Namespace) -> int:
    fields = _tenant_fields(args)
    if not fields and not (args.enable or args.disable):
        raise UsageError(
            "nothing to update: give --name, --models, --metadata, --limits, --enable or --disable"
        )
    path = _path("tenants", args.id)
    tenant = api.json("PATCH", path, body=fields) if fields else None
    if args.enable or args.disable:
        tenant = api.json("POST", path + ("/enable" if args.enable else "/disable"))
    _print_json(tenant)
    return 0


def _tenant_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.name is not None:
        fields["name"] = args.name
    if args.models is not None:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        fields["models"] = None if models == ["*"] else models
    if args.metadata is not None:
        fields["metadata"] = dict(args.metadata)
    if args.limits is not None:
        if not isinstance(args.limits, dict | None):
            raise UsageError("--limits must be a JSON object (or null)")
        fields["limits"] = args.limits
    return fields


def _tenants_delete(api: AdminApi, args: argparse.Namespace) -> int:
    what = f"tenant {args.id!r} with its keys and policies"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"deleting the {what} needs --yes")
        if not _confirm(f"Delete {what}? [y/N] "):
            raise UsageError("not deleted")
    api.call("DELETE", _path("tenants", args.id))
    print(f"deleted {what}")
    return 0


def _confirm(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


# -- keys ----------------------------------------------------------------------------


def _keys_create(api: AdminApi, args: argparse.Namespace) -> int:
    if args.create_tenant:
        try:
            api.call("POST", "/tenants", body={"id": args.tenant})
        except ApiError as exc:
            if exc.status != 409:  # 409: it exists (in the store or the config file)
                raise
    body: dict[str, Any] = {"name": args.name}
    if args.expires_in is not None:
        body["expires_at"] = time.time() + args.expires_in
    created = api.json("POST", _path("tenants", args.tenant, "keys"), body=body)
    secret = created.pop("key")
    _print_secret(created, secret)
    return 0


def _keys_list(api: AdminApi, args: argparse.Namespace) -> int:
    keys = api.json("GET", _path("tenants", args.tenant, "keys"))["data"]
    if args.format == "json":
        _print_json(keys)
        return 0
    header = ("id", "name", "prefix", "status", "created", "last used", "expires")
    rows = [
        (
            k["id"],
            k["name"],
            k["prefix"] + "…",
            k["status"],
            *(_when(k[f]) for f in ("created_at", "last_used_at", "expires_at")),
        )
        for k in keys
    ]
    print(_table(header, rows))
    return 0


def _keys_revoke(api: AdminApi, args: argparse.Namespace) -> int:
    _print_json(api.json("DELETE", _path("tenants", args.tenant, "keys", args.key_id)))
    return 0


def _keys_rotate(api: AdminApi, args: argparse.Namespace) -> int:
    body = {} if args.grace is None else {"grace_seconds": args.grace}
    path = _path("tenants", args.tenant, "keys", args.key_id, "rotate")
    rotated = api.json("POST", path, body=body)
    secret = rotated["key"].pop("key")
    _print_secret(rotated, secret)
    return 0


def _print_secret(shown: Any, secret: str) -> None:
    """`shown` as JSON, then the secret alone on the last line (`| tail -1`)."""
    _print_json(shown)
    print(secret, flush=True)
    _say("the key's secret is the last line of the output; it will not be shown again")


# -- policies ------------------------------------------------------------------------


def _policy_get(api: AdminApi, args: argparse.Namespace) -> int:
    parts = ("versions", str(args.version)) if args.version is not None else ()
    found = api.json("GET", _path("tenants", args.tenant, "policy", *parts))
    _print_json(found["document"] if args.document else found)
    return 0


def _policy_set(api: AdminApi, args: argparse.Namespace) -> int:
    document = _read_policy(args.file)
    _print_json(api.json("PUT", _path("tenants", args.tenant, "policy"), body=document))
    return 0


def _policy_versions(api: AdminApi, args: argparse.Namespace) -> int:
    versions = api.json("GET", _path("tenants", args.tenant, "policy", "versions"))["data"]
    if args.format == "json":
        _print_json(versions)
        return 0
    header = ("version", "created", "author", "active")
    rows = [
        (str(v["version"]), _when(v["created_at"]), v["author"], "*" if v["active"] else "")
        for v in versions
    ]
    print(_table(header, rows, right={0}))
    return 0


def _policy_rollback(api: AdminApi, args: argparse.Namespace) -> int:
    path = _path("tenants", args.tenant, "policy", "rollback")
    _print_json(api.json("POST", path, body={"version": args.version}))
    return 0


def _policy_dry_run(api: AdminApi, args: argparse.Namespace) -> int:
    if args.tenant is None and args.policy is None:
        raise UsageError("give --tenant, --policy FILE, or both")
    messages = [{"role": "system", "content": text} for text in args.system]
    messages += [{"role": "user", "content": text} for text in args.message]
    body: dict[str, Any] = {"messages": messages, "answer": args.answer, "tenant": args.tenant}
    if args.policy is not None:
        body["policy"] = _read_policy(args.policy)
    result = api.json("POST", "/policies/dry-run", body=body)
    if args.format == "json":
        _print_json(result)
        return 0
    verdict = result["verdict"]
    print(f"policy:   {result['policy_source']}")
    if verdict["outcome"] == "allowed":
        print("verdict:  allowed")
    else:
        where = f"at {verdict['stage']} by {verdict['guard']}"
        print(f"verdict:  {verdict['outcome']} {where}: {verdict['reason']}")
    for message in result["messages"]:
        print(f"{message['role'] + ':':<9} {message['content']}")
    if result["answer"] is not None:
        print(f"answer:   {result['answer']}")
    if result["findings"]:
        header = ("stage", "guard", "entity", "action", "count")
        rows = [tuple(str(f[c]) for c in header) for f in result["findings"]]
        print("\n" + _table(header, rows, right={4}))
    return 0


def _read_policy(file: str) -> Any:
    """A policy document from a YAML (or JSON) file, or stdin for `-`."""
    name = "stdin" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise UsageError(f"{name} is neither YAML nor JSON{where}: {problem}") from None
    if not isinstance(document, dict):
        raise UsageError(f"{name} must hold a policy: a mapping such as `input: [...]`")
    return document


# -- usage ---------------------------------------------------------------------------


def _usage(api: AdminApi, args: argparse.Namespace) -> int:
    params = {"tenant": args.tenant, "group_by": args.group_by}
    params |= {k: v for k, v in (("from", args.since), ("to", args.until)) if v is not None}
    if args.format == "csv":
        csv = api.call("GET", "/usage", params={**params, "format": "csv"}).content
        sys.stdout.buffer.write(csv)
        sys.stdout.buffer.flush()
        return 0
    report = api.json("GET", "/usage", params=params)
    if args.format == "json":
        _print_json(report)
        return 0
    none = "(no user)" if args.group_by == "user" else "-"
    header = _USAGE_COLUMNS + _USAGE_COUNTS
    rows = [_usage_row(none if r["group"] is None else r["group"], r) for r in report["data"]]
    print(f"usage of {report['tenant']}, {report['from']} to {report['to']}, by {args.group_by}")
    print(_table(header, rows, right=set(range(1, 8)), total=_usage_row("total", report["total"])))
    return 0


def _usage_row(group: str, row: dict[str, Any]) -> tuple[str, ...]:
    micro = int(row["cost_micro_usd"])
    counts = ("requests", "prompt_tokens", "completion_tokens")
    return (
        group,
        *(f"{row[c]:,}" for c in counts),
        f"{micro // 1_000_000:,}.{micro % 1_000_000:06d}",
        *(f"{row[c]:,}" for c in _USAGE_COUNTS),
    )


# -- output --------------------------------------------------------------------------


def _path(*segments: str) -> str:
    return "/" + "/".join(quote(s, safe="") for s in segments)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _say(line: str) -> None:
    print(f"railgate: {line}", file=sys.stderr)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(ts))


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: set[int] | None = None,
    total: Sequence[str] | None = None,
) -> str:
    """Columns aligned (those in `right` to the right), a rule under the header and
    above the `total` row."""
    lines = [header, *rows, *([total] if total else [])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    align = right or set()

    def render(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in align else c.ljust(w) for i, (c, w) in pairs).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [render(header), rule, *map(render, rows)]
    if total:
        out += [rule, render(total)] if rows else [render(total)]
    return "\n".join(out)
