"""NeMo Guardrails engines: one `LLMRails` per distinct configuration, built once.

A policy names a config (`rails/nemo/configs/<name>` or `<rails_configs_dir>/<name>`)
plus parameters; `NemoEngine.rails` loads it, checks that it can run offline, merges
the parameters into its `custom_data`, turns on streaming output rails, and builds the
`LLMRails` (~0.2 s; NeMo itself takes ~0.8 s to import). The result is cached per
(config files' content, parameters, window sizes), so every tenant with the same
config shares one engine, and a changed config directory gets a new one. Engines are
built when the gateway builds its pipelines at start-up, never on a request.

Offline by construction: NeMo's usage statistics are switched off before it is
imported, and configs that would make NeMo load an embeddings model (`define user`
messages for dialog rails, a knowledge base) or bring their own model clients
(`models:`) are refused with a reason; the rails model is always the gateway's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
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

__all__ = ["BUNDLED", "NemoEngine", "bundled_configs"]

BUNDLED = Path(__file__).parent / "configs"
"""Configs shipped with Railgate, usable by name from any policy."""


def bundled_configs() -> list[str]:
    return sorted(p.name for p in BUNDLED.iterdir() if (p / "config.yml").is_file())


class NemoEngine:
    """Builds and caches `LLMRails` for `NemoOptions`.

    Args:
        llm: the gateway's rails model (None: configs that call a model fail the call).
        configs_dir: where tenant configs live besides the bundled ones.
    """

    def __init__(self, llm: RailsLLM | None = None, configs_dir: str | Path | None = None) -> None:
        from rails.nemo.model import RailsModel

        self.model = RailsModel(llm)
        self.configs_dir = Path(configs_dir) if configs_dir else None
        self._rails: dict[bytes, LLMRails] = {}

    def locate(self, name: str) -> Path:
        """The directory of a config name: a bundled one first, then `configs_dir`."""
        if not CONFIG_NAME.fullmatch(name):
            raise ValueError(f"invalid rails config name {name!r}")
        for root in (BUNDLED, self.configs_dir):
            if root is not None and (root / name / "config.yml").is_file():
                return root / name
        known = ", ".join(bundled_configs())
        raise ValueError(f"unknown rails config {name!r} (bundled: {known})")

    def rails(self, options: NemoOptions) -> LLMRails:
        """The engine for these options, built on first use (blocking, ~0.2 s)."""
        path = self.locate(options.config)
        key = hashlib.blake2b(_digest(path) + msgspec.json.encode(options), digest_size=16).digest()
        found = self._rails.get(key)
        if found is None:
            with _quiet():
                from nemoguardrails import LLMRails

                found = LLMRails(self.load(path, options), llm=self.model)
            self._rails[key] = found
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


@contextmanager
def _quiet() -> Iterator[None]:
    """NeMo's own deprecation warnings (e.g. its config schema's renamed fields) are
    not the tenant's business; anything else still warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        yield


def _digest(path: Path) -> bytes:
    """Content hash of a config directory (its version)."""
    h = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return h.digest()
