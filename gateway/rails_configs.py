"""NeMo rails configs stored through the admin API: what an upload may hold, and the copy
on local disk that the NeMo engine reads.

An upload is a set of flat text files, checked by `upload_problems` and `compiled`:

    config.yml              required; more YAML (`*.yml`, `*.yaml`) is merged into it
    *.co                    Colang 1.0 (`define flow …`, `define bot …`)
    *.md                    notes (NeMo ignores them)

at most `MAX_FILES` files and `MAX_BYTES` together. Never Python: NeMo imports a config's
`actions.py` / `config.py`, so an admin key could run code in every replica; configs with
actions ship bundled or in `rails.configs_dir`. The YAML may only use `YAML_KEYS` (no
`models:`, `import_paths` to server directories, tracing exporters, actions servers),
then the files are compiled in a temporary directory (`rails.nemo.engine.compile_problems`:
every Colang file parsed on its own, expressions and actions checked, the `LLMRails`
built) on a worker thread. Problems are `(path, reason)` pairs: `$.name`, `$.files`,
`$.files["rails.co"]`.

Every replica keeps the latest version of every stored config under a directory of its
own (`ConfigMirror`), the last of the engine's search path (bundled, `rails.configs_dir`,
stored):

    <root>/<name>           symlink → .versions/<name>-v<version>-<random>/
    <root>/.versions/…      one directory per version, never changed once written

`sync(store)` writes each new version into a directory of its own and then swaps the
symlink (an atomic rename); the engine resolves the symlink before it reads, so it never
sees half a config. Then the guards running a changed config, and the pipelines holding
them, are rebuilt (`GuardRegistry.rebuild`). The reloader syncs before it re-reads the
policies, so a policy and the config it names can arrive in one change; the upload
route syncs on its own replica before it answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import msgspec
import yaml

from gateway.store.base import RailsConfigVersion, Store
from rails import GuardRegistry
from rails.nemo.engine import bundled_configs, compile_problems
from rails.nemo.options import CONFIG_NAME, NemoOptions

__all__ = [
    "MAX_BYTES",
    "MAX_FILES",
    "YAML_KEYS",
    "ConfigMirror",
    "compiled",
    "mirror_root",
    "shadowed",
    "upload_problems",
]

MAX_BYTES = 256 * 1024
"""Total size of an upload's files (UTF-8)."""
MAX_FILES = 64
YAML_KEYS = frozenset(
    {
        "rails",
        "prompts",
        "custom_data",
        "instructions",
        "sample_conversation",
        "colang_version",
        "lowest_temperature",
        "prompting_mode",
    }
)
"""Top-level keys an uploaded config's YAML may use."""

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_SUFFIXES = (".yml", ".yaml", ".co", ".md")
_REQUIRED = "config.yml"

Problem = tuple[str, str]


def upload_problems(name: str, files: dict[str, str]) -> list[Problem]:
    """What is wrong with an upload before compiling it: the name, the file names and
    sizes, the YAML. Cheap (no NeMo)."""
    problems: list[Problem] = []
    if not CONFIG_NAME.fullmatch(name):
        problems.append(
            ("$.name", "Expected a config name: lower-case letters, digits, '.', '_', '-'")
        )
    if _REQUIRED not in files:
        problems.append(("$.files", f"`{_REQUIRED}` is required"))
    if len(files) > MAX_FILES:
        problems.append(("$.files", f"Too many files: {len(files)} (at most {MAX_FILES})"))
    size = 0
    for file_name, content in sorted(files.items()):
        at = f"$.files[{msgspec.json.encode(file_name).decode()}]"
        reason = _file_problem(file_name, content)
        if reason is not None:
            problems.append((at, reason))
            continue
        size += len(content.encode())
        if file_name.endswith((".yml", ".yaml")):
            problems.extend((at, r) for r in _yaml_problems(content))
    if size > MAX_BYTES:
        problems.append(("$.files", f"Too large: {size} bytes (at most {MAX_BYTES})"))
    return problems


def shadowed(name: str, configs_dir: str | None) -> str | None:
    """Where a config of this name already comes from, if anywhere but the store: the
    engine finds bundled configs and `rails.configs_dir` first, so a stored one of the
    same name would never run."""
    if name in bundled_configs():
        return "a bundled config"
    if configs_dir is not None and (Path(configs_dir) / name / _REQUIRED).is_file():
        return "a config in `rails.configs_dir`"
    return None


async def compiled(name: str, files: dict[str, str]) -> list[Problem]:
    """Compile an upload that passed `upload_problems`, as the engine would load it
    (~0.3 s, more the first time NeMo is imported: on a worker thread)."""
    return await asyncio.to_thread(_compile, name, files)


def _compile(name: str, files: dict[str, str]) -> list[Problem]:
    with tempfile.TemporaryDirectory(prefix="railgate-upload-") as tmp:
        path = Path(tmp) / name
        path.mkdir()
        _write(path, files)
        problems = compile_problems(path, name)
    return [
        ("$.files" if f is None else f"$.files[{msgspec.json.encode(f).decode()}]", reason)
        for f, reason in problems
    ]


def _file_problem(file_name: str, content: str) -> str | None:
    if file_name.endswith(".py"):
        return (
            "Python files are not accepted: NeMo would import them in every replica. "
            "Ship configs with actions bundled or in `rails.configs_dir`"
        )
    if not _FILE_NAME.fullmatch(file_name) or not file_name.endswith(_SUFFIXES):
        return "Expected a file name ending in .yml, .yaml, .co or .md (no directories)"
    if "\0" in content:
        return "Contains NUL characters: only text files are accepted"
    try:
        content.encode()
    except UnicodeEncodeError:
        return "Not valid Unicode text"
    return None


def _yaml_problems(content: str) -> list[str]:
    try:
        document = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        return [f"Not valid YAML: {problem}{where}"]
    if document is None:
        return ["Empty: expected a YAML mapping (`rails:`, `prompts:` …)"]
    if not isinstance(document, dict):
        return ["Expected a YAML mapping (`rails:`, `prompts:` …)"]
    problems = [
        f"`{key}` is not accepted in an uploaded config (accepted: {', '.join(sorted(YAML_KEYS))})"
        for key in document
        if key not in YAML_KEYS
    ]
    version = document.get("colang_version", "1.0")
    if str(version) != "1.0":
        problems.append(f"colang_version {version!r}: only Colang 1.0 rails run in the gateway")
    return problems


def _write(path: Path, files: dict[str, str]) -> None:
    for file_name, content in files.items():
        (path / file_name).write_text(content, encoding="utf-8")


@dataclass(frozen=True, slots=True)
class _Local:
    version: int
    created_at: float
    path: Path


class ConfigMirror:
    """The latest version of every stored rails config, on this replica's disk.

    Args:
        root: a directory of this process alone (created on the first write, 0700).
        registry: rebuilds the guards of a config when its version changes (None: the
            app runs injected content stages, nothing to rebuild).
    """

    def __init__(self, root: Path, registry: GuardRegistry | None = None) -> None:
        self.root = root
        self._registry = registry
        self._lock = asyncio.Lock()
        self._current: dict[str, _Local] = {}
        self._previous: dict[str, Path] = {}
        """The version before the current one: an engine build that resolved it just
        before the swap may still be reading it; older ones are removed."""

    async def sync(self, store: Store) -> list[str]:
        """Write the store's latest versions that this replica does not have yet, remove
        configs gone from the store, and rebuild the guards running a changed config.
        Returns the names that changed. Concurrent calls run one after the other."""
        async with self._lock:
            latest = {c.name: c for c in await self._read(store)}
            changed = [c for c in latest.values() if self._stale(c)]
            gone = [name for name in self._current if name not in latest]
            if not changed and not gone:
                return []
            await asyncio.to_thread(self._apply, changed, gone)
            names = frozenset({c.name for c in changed} | set(gone))
            if self._registry is not None:
                await asyncio.to_thread(self._registry.rebuild, partial(_runs, names))
            return sorted(names)

    def close(self) -> None:
        """Remove the directory (shutdown)."""
        shutil.rmtree(self.root, ignore_errors=True)

    async def _read(self, store: Store) -> list[RailsConfigVersion]:
        # Only names an upload could have used: anything else cannot be a directory name.
        return [c for c in await store.rails_configs() if CONFIG_NAME.fullmatch(c.name)]

    def _stale(self, config: RailsConfigVersion) -> bool:
        local = self._current.get(config.name)
        return local is None or (local.version, local.created_at) != (
            config.version,
            config.created_at,
        )

    def _apply(self, changed: list[RailsConfigVersion], gone: list[str]) -> None:
        versions = self.root / ".versions"
        self.root.mkdir(mode=0o700, exist_ok=True)
        versions.mkdir(mode=0o700, exist_ok=True)
        for config in changed:
            path = Path(tempfile.mkdtemp(prefix=f"{config.name}-v{config.version}-", dir=versions))
            _write(path, _text_files(config.files))
            link = self.root / f".{config.name}.{secrets.token_hex(4)}"
            link.symlink_to(Path(versions.name) / path.name, target_is_directory=True)
            os.replace(link, self.root / config.name)
            self._retire(config.name)
            self._current[config.name] = _Local(config.version, config.created_at, path)
        for name in gone:
            (self.root / name).unlink(missing_ok=True)
            shutil.rmtree(self._current.pop(name).path, ignore_errors=True)
            older = self._previous.pop(name, None)
            if older is not None:
                shutil.rmtree(older, ignore_errors=True)

    def _retire(self, name: str) -> None:
        """The current version becomes the previous one; the one before is removed."""
        older = self._previous.pop(name, None)
        if older is not None:
            shutil.rmtree(older, ignore_errors=True)
        current = self._current.get(name)
        if current is not None:
            self._previous[name] = current.path


def mirror_root() -> Path:
    """A directory for a `ConfigMirror` under the system's temporary directory, unique to
    this process and app (not created yet)."""
    name = f"railgate-rails-{os.getpid()}-{secrets.token_hex(4)}"
    return Path(tempfile.gettempdir()) / name


def _text_files(files: dict[str, str]) -> dict[str, str]:
    """The files of a stored version that an upload may hold (defence in depth: only
    the admin API writes configs to the store, and it refuses anything else)."""
    return {f: c for f, c in files.items() if _file_problem(f, c) is None}


def _runs(names: frozenset[str], kind: str, options: msgspec.Struct) -> bool:
    """The guard runs one of these NeMo configs."""
    return isinstance(options, NemoOptions) and options.config in names
