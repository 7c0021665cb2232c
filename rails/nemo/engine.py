"""NeMo Guardrails engines: one `LLMRails` per distinct configuration, built once.

A policy names a config (`rails/nemo/configs/<name>`, else `<dir>/<name>` of the first of
the engine's `configs_dirs` that has it) plus parameters; `NemoEngine.rails` loads it, checks that it can run offline, merges
the parameters into its `custom_data`, turns on streaming output rails, and builds the
`LLMRails` (~0.2 s; NeMo itself takes ~0.8 s to import). The result is cached per
(config files' content, parameters, window sizes), so every tenant with the same
config shares one engine, and a changed config directory gets a new one (the engine of
the same options' previous content is dropped then). Engines are built when the gateway
builds its pipelines (at start-up, on a reload), never on a request.

Offline by construction: NeMo's usage statistics are switched off before it is
imported, and configs that would make NeMo load an embeddings model (`define user`
messages for dialog rails, a knowledge base) or bring their own model clients
(`models:`) are refused with a reason; the rails model is always the gateway's.

`compile_problems` checks a config more strictly than NeMo loads one, for configs
uploaded through the admin API: NeMo's Colang 1.0 parser skips a file it does not
recognise and keeps `if` expressions and `execute` names as text until a flow runs them.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from rails.nemo.options import CONFIG_NAME, NemoOptions

# Before NeMo is imported anywhere: it reports usage statistics to NVIDIA by default.
os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"
# NeMo logs prompts and completions at INFO and, when an action raises, the action's
# parameters (user and bot messages) at WARNING: texts may carry personal data, so only
# its critical records pass. Rail failures reach our own logs as `RailError` types.
logging.getLogger("nemoguardrails").setLevel(logging.CRITICAL)

if TYPE_CHECKING:
    from nemoguardrails import LLMRails, RailsConfig

    from rails.nemo.model import RailsLLM

__all__ = ["BUNDLED", "NemoEngine", "bundled_configs", "compile_problems", "offline_problems"]

BUNDLED = Path(__file__).parent / "configs"
"""Configs shipped with Railgate, usable by name from any policy."""


def bundled_configs() -> list[str]:
    return sorted(p.name for p in BUNDLED.iterdir() if (p / "config.yml").is_file())


class NemoEngine:
    """Builds and caches `LLMRails` for `NemoOptions`.

    Args:
        llm: the gateway's rails model (None: configs that call a model fail the call).
        configs_dirs: where configs live besides the bundled ones, searched in order
            after them (the gateway: `rails.configs_dir`, then the admin API's store).
    """

    def __init__(
        self, llm: RailsLLM | None = None, configs_dirs: Sequence[str | Path] = ()
    ) -> None:
        from rails.nemo.model import RailsModel

        self.model = RailsModel(llm)
        self.configs_dirs = tuple(Path(d) for d in configs_dirs)
        self._rails: dict[bytes, LLMRails] = {}
        self._latest: dict[bytes, bytes] = {}
        """Encoded options → cache key of the content their engine was last built from."""

    def locate(self, name: str) -> Path:
        """The directory of a config name: a bundled one first, then `configs_dirs` in
        order. Symlinks are resolved, so a directory swapped in meanwhile (a new
        version of a stored config) is never read half from one version, half the other."""
        if not CONFIG_NAME.fullmatch(name):
            raise ValueError(f"invalid rails config name {name!r}")
        for root in (BUNDLED, *self.configs_dirs):
            if (root / name / "config.yml").is_file():
                return (root / name).resolve()
        known = ", ".join(bundled_configs())
        raise ValueError(
            f"unknown rails config {name!r} (bundled: {known}; others come from "
            "`rails.configs_dir` or the admin API)"
        )

    def rails(self, options: NemoOptions) -> LLMRails:
        """The engine for these options, built on first use (blocking, ~0.2 s)."""
        path = self.locate(options.config)
        encoded = msgspec.json.encode(options)
        key = hashlib.blake2b(_digest(path) + encoded, digest_size=16).digest()
        found = self._rails.get(key)
        if found is None:
            with _quiet():
                from nemoguardrails import LLMRails

            config = self.load(path, options)
            with _quiet(), _thread_loop():
                found = LLMRails(config, llm=self.model)
            self._rails[key] = found
            previous = self._latest.get(encoded)
            if previous is not None and previous != key:
                # Guards built on it keep it until they are replaced: calls in flight finish.
                self._rails.pop(previous, None)
        self._latest[encoded] = key
        return found

    def load(self, path: Path, options: NemoOptions) -> RailsConfig:
        """Parse and check a config directory, with the options applied."""
        with _quiet():
            from nemoguardrails import RailsConfig

        try:
            with _quiet():
                config = RailsConfig.from_path(str(path))
        except Exception as exc:  # NeMo raises many types for a broken config
            raise ValueError(f"rails config {options.config!r} does not load: {exc}") from None
        problems = offline_problems(config)
        if problems:
            raise ValueError(f"rails config {options.config!r}: {'; '.join(problems)}")
        config.custom_data = {**(config.custom_data or {}), **options.params}
        streaming = config.rails.output.streaming
        streaming.enabled = True
        streaming.stream_first = False  # nothing reaches the client before its check
        if options.chunk_size is not None:
            streaming.chunk_size = options.chunk_size
        if options.context_size is not None:
            streaming.context_size = options.context_size
        if streaming.context_size >= streaming.chunk_size:
            streaming.context_size = max(0, streaming.chunk_size - 1)
        return config

    def close(self) -> None:
        """Cancel work NeMo still has in flight (shutdown)."""
        for rails in self._rails.values():
            for task in list(getattr(rails, "_active_tasks", ())):
                task.cancel()
        self._rails.clear()
        self._latest.clear()


def offline_problems(config: RailsConfig) -> list[str]:
    """Why NeMo would need more than the gateway's rails model for this config."""
    problems = []
    if config.user_messages:
        problems.append(
            "defines user messages (`define user`): dialog rails need an embeddings model, "
            "which Railgate never downloads; use input/output rails only"
        )
    if config.docs:
        problems.append("has a knowledge base (kb/): it needs an embeddings model")
    if config.models:
        problems.append(
            "declares `models:`; the rails model is the gateway's `rails_model`, remove them"
        )
    if not config.rails.input.flows and not config.rails.output.flows:
        problems.append("has no input or output rails")
    return problems


Problem = tuple[str | None, str]
"""(file name, or None for the whole config; reason)."""

_VAR = re.compile(r"\$([a-zA-Z_][a-zA-Z0-9_]*)")
_COMMENT = re.compile(r"#.*$", re.MULTILINE)
_PYDANTIC_NOISE = re.compile(
    r"\s*\[type=.*?, input_type=\w+\]|\s*For further information visit \S+", re.DOTALL
)
_RUNTIME_ACTIONS = frozenset({"utter"})
"""`run_action` names the Colang 1.0 runtime handles itself (`bot …`)."""


def compile_problems(path: Path, name: str) -> list[Problem]:
    """Everything wrong with a config directory, checked as strictly as the gateway can:

    1. each `.co` file on its own with NeMo's Colang 1.0 parser (a syntax error names
       its file and line), a file that defines nothing (NeMo skips those silently), and
       every `if` / `while` / `$var =` expression of its flows, which NeMo keeps as text
       until the flow runs it;
    2. loading the directory as `NemoEngine.load` does, with `offline_problems`;
    3. building the `LLMRails` (rails flows must exist in the config or NeMo's library)
       and finding every action the config's flows `execute`.

    Blocking (~0.3 s plus NeMo's import the first time): call it on a worker thread.
    """
    with _quiet():
        from nemoguardrails import LLMRails
        from nemoguardrails.colang import parse_colang_file

    problems: list[Problem] = []
    executed: list[tuple[str, int, str]] = []
    for file in sorted(path.glob("*.co")):
        content = file.read_text(encoding="utf-8")
        try:
            with _quiet():
                parsed = parse_colang_file(file.name, content, version="1.0")
        except Exception as exc:  # NeMo's parser raises bare Exceptions too
            problems.append((file.name, _reason(exc, path)))
            continue
        if _COMMENT.sub("", content).strip() and not any(
            parsed.get(k) for k in ("flows", "bot_messages", "user_messages")
        ):
            problems.append(
                (file.name, "Defines nothing in Colang 1.0 (`define flow …`, `define bot …`)")
            )
        for flow in parsed.get("flows", []):
            for element in flow.get("elements", []):
                line = int((element.get("_source_mapping") or {}).get("line_number") or 0)
                expression = element.get("expression")
                if isinstance(expression, str) and (bad := _bad_expression(expression)):
                    problems.append((file.name, f"Line {line}: `{expression}` {bad}"))
                action = element.get("action_name")
                if element.get("_type") == "run_action" and action not in _RUNTIME_ACTIONS:
                    executed.append((file.name, line, str(action)))
    if problems:
        return problems
    engine = NemoEngine()
    try:
        config = engine.load(path, NemoOptions(config=name))
        with _quiet(), _thread_loop():
            rails = LLMRails(config, llm=engine.model)
    except Exception as exc:  # NeMo raises many types for a broken config
        return [(None, _reason(exc, path))]
    dispatcher = rails.runtime.action_dispatcher
    for file_name, line, action in executed:
        if not dispatcher.has_registered(action):
            problems.append(
                (file_name, f"Line {line}: unknown action `{action}` (not one of NeMo's)")
            )
    return problems


def _bad_expression(expression: str) -> str | None:
    """Why NeMo's evaluator (`simpleeval` over Python syntax) could never run this."""
    try:
        ast.parse(_VAR.sub(r"var_\1", expression).strip(), mode="eval")
    except SyntaxError as exc:
        return f"is not an expression ({exc.msg})"
    return None


def _reason(exc: BaseException, path: Path) -> str:
    """An exception's message without the directory it was compiled in, bounded."""
    text = str(exc)
    for shown in {str(path), str(path.resolve())}:
        text = text.replace(f"{shown}/", "").replace(shown, "<config>")
    text = text.removeprefix(f"rails config {path.name!r}").lstrip(": ")
    text = _PYDANTIC_NOISE.sub("", text).strip()
    return (text[:1].upper() + text[1:])[:1000] or type(exc).__name__


@contextmanager
def _quiet() -> Iterator[None]:
    """NeMo's own deprecation warnings (e.g. its config schema's renamed fields) are
    not the tenant's business; anything else still warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        yield


@contextmanager
def _thread_loop() -> Iterator[None]:
    """`LLMRails()` asks for the thread's event loop and, on a worker thread without one,
    creates and sets a loop it never closes (a leak per build, reported as an unclosed
    socket when the thread ends). On such a thread, provide one and close it after."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        yield
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _digest(path: Path) -> bytes:
    """Content hash of a config directory (its version): every file's name and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        data = file.read_bytes()
        h.update(str(file.relative_to(path)).encode() + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()
