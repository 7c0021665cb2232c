"""GuardRegistry: turns tenant policies into pipelines, building each engine and guard once.

`KINDS` is the one place a guard kind is declared: the key a policy uses (`pii:`), the
options struct it parses into, a factory, optional parse-time checks, and an optional
restorer (the kind that fills `ctx.vault` also empties it into the answer).

A registry belongs to the gateway's lifespan (no module state): it owns the heavy engines
(Presidio is imported and built the first time a policy uses `pii`, so a gateway without
PII starts fast; NeMo likewise for `nemo`), one guard per distinct options, and one
pipeline per policy object.
Building an engine blocks for a while: call `pipeline()` for every known policy at startup.
Builds may run on several worker threads at once: one lock serialises them, while
lookups of what is already built take no lock. When what a guard was built from
changes (a new version of a stored NeMo config), `rebuild()` replaces that guard and
every cached pipeline using it, off the event loop, without dropping calls in flight.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec

from rails.base import StreamFilter, TextGuard
from rails.denylist import DenylistGuard, DenylistOptions, denylist_problems
from rails.nemo.options import NemoOptions, nemo_problems
from rails.pii.custom import compile_custom, compile_pattern
from rails.pii.options import PiiOptions
from rails.pipeline import ErrorCounts, GuardPipeline, GuardSlot, Restorer

if TYPE_CHECKING:
    from rails.nemo.model import RailsLLM
    from rails.policy import GuardSpec, Policy

__all__ = ["KINDS", "GuardKind", "GuardRegistry"]

log = logging.getLogger("railgate")

_O = TypeVar("_O", bound=msgspec.Struct)
_T = TypeVar("_T")


def _no_problems(options: object) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True, slots=True)
class GuardKind(Generic[_O]):
    """Everything the policy parser and the registry need to know about one guard kind."""

    options: type[_O]
    """Struct the policy's mapping for this kind is parsed into (frozen, strict)."""
    build: Callable[[_O, bool, GuardRegistry], TextGuard]
    """`(options, shadow, registry) -> guard`; shared engines come from `registry.engine`."""
    problems: Callable[[_O], Iterable[tuple[str, str]]] = _no_problems
    """Parse-time checks beyond types (e.g. regexes compile): `(".path", reason)` pairs,
    paths relative to the options."""
    restorer: Callable[[], Restorer] | None = None
    """For a kind that puts values in `ctx.vault`: what puts them back in the answer."""


class GuardRegistry:
    """Builds and caches pipelines, guards and engines for one gateway process.

    Args:
        nlp_model: spaCy model for the PII engine's NER (None: patterns only, offline).
        rails_llm: the model NeMo rails call (self-check prompts); None: such rails fail.
        rails_configs_dirs: directories of NeMo configs besides the bundled ones, searched
            in order (a name found in an earlier one shadows the later ones).
        kinds: guard kinds by policy key; tests may add their own.
    """

    def __init__(
        self,
        *,
        nlp_model: str | None = None,
        rails_llm: RailsLLM | None = None,
        rails_configs_dirs: Sequence[str | Path] = (),
        kinds: Mapping[str, GuardKind[Any]] | None = None,
    ) -> None:
        self.nlp_model = nlp_model
        self.rails_llm = rails_llm
        self.rails_configs_dirs = tuple(str(d) for d in rails_configs_dirs)
        self.kinds: Mapping[str, GuardKind[Any]] = KINDS if kinds is None else kinds
        self.errors: ErrorCounts = Counter()
        """Guard failures of every pipeline built here, for `/metrics`."""
        self._engines: dict[Hashable, object] = {}
        self._guards: dict[tuple[str, bool, bytes], TextGuard] = {}
        self._pipelines: dict[int, GuardPipeline] = {}
        self._policies: dict[int, weakref.ref[Policy]] = {}
        """The policy of each cached pipeline, for `rebuild()`."""
        self._lock = threading.RLock()
        """Held while building (engines, guards, pipelines); never for a cache hit."""

    def pipeline(self, policy: Policy) -> GuardPipeline:
        """The pipeline of a policy, built the first time this policy object is seen.

        Cached per object and dropped when the policy is garbage collected, so replacing
        a tenant's policy frees its pipeline. Guards and engines are shared.
        """
        key = id(policy)
        found = self._pipelines.get(key)
        if found is None:
            with self._lock:
                found = self._pipelines.get(key)
                if found is None:
                    found = self._build(policy)
                    self._pipelines[key] = found
                    self._policies[key] = weakref.ref(policy)
                    weakref.finalize(policy, self._forget, key).atexit = False
        return found

    def guard(self, kind: str, options: msgspec.Struct, *, shadow: bool = False) -> TextGuard:
        """The guard for a kind and options, built once per distinct (options, shadow)."""
        # Options may hold dicts (unhashable); their canonical encoding is the key.
        key = (kind, shadow, msgspec.json.encode(options))
        found = self._guards.get(key)
        if found is None:
            with self._lock:
                found = self._guards.get(key)
                if found is None:
                    found = self.kinds[kind].build(options, shadow, self)
                    self._guards[key] = found
        return found

    def engine(self, key: Hashable, build: Callable[[], _T]) -> _T:
        """A process-wide engine (Presidio analyzer, NeMo rails), built on first use."""
        if key not in self._engines:
            with self._lock:
                if key not in self._engines:
                    self._engines[key] = build()
        return cast(_T, self._engines[key])

    def rebuild(self, stale: Callable[[str, msgspec.Struct], bool]) -> int:
        """Build anew every guard whose `(kind, options)` is `stale`, and every cached
        pipeline holding one, then swap them in; returns how many guards were replaced.

        For a guard whose source changed underneath the same options (a stored NeMo
        config's new version). Blocking: call it on a worker thread. A guard that no
        longer builds is kept as it was (logged), so the data plane never loses a rail.
        A stage already running finishes on the old guard; a call in flight may run its
        input stage on the old guard and its output stage on the new one.
        """
        with self._lock:
            fresh: dict[tuple[str, bool, bytes], TextGuard] = {}
            for key in list(self._guards):
                kind, shadow, encoded = key
                options = msgspec.json.decode(encoded, type=self.kinds[kind].options)
                if not stale(kind, options):
                    continue
                try:
                    fresh[key] = self.kinds[kind].build(options, shadow, self)
                except ValueError as exc:
                    log.error(
                        "%s guard cannot be rebuilt (%s); keeping the previous one", kind, exc
                    )
            if not fresh:
                return 0
            replaced = {id(self._guards[key]) for key in fresh}
            self._guards.update(fresh)
            for policy_id, policy_ref in list(self._policies.items()):
                policy = policy_ref()
                pipeline = self._pipelines.get(policy_id)
                if policy is not None and pipeline is not None and _uses(pipeline, replaced):
                    self._pipelines[policy_id] = self._build(policy)
            return len(fresh)

    def _forget(self, key: int) -> None:
        self._pipelines.pop(key, None)
        self._policies.pop(key, None)

    def close(self) -> None:
        """Release engines that hold resources (worker pools); called at shutdown."""
        for engine in self._engines.values():
            close = getattr(engine, "close", None)
            if callable(close):
                close()
        self._engines.clear()
        self._guards.clear()
        self._pipelines.clear()
        self._policies.clear()

    def _build(self, policy: Policy) -> GuardPipeline:
        specs = (*policy.input, *policy.output)
        restorers = [
            self.engine(("restorer", s.kind), restore)
            for s in specs
            if (restore := self.kinds[s.kind].restorer) is not None
        ]
        return GuardPipeline(
            [self._slot(s) for s in policy.input],
            [self._slot(s) for s in policy.output],
            restorer=restorers[0] if restorers else None,
            errors=self.errors,
        )

    def _slot(self, spec: GuardSpec) -> GuardSlot:
        return GuardSlot(
            guard=self.guard(spec.kind, spec.options, shadow=spec.shadow),
            shadow=spec.shadow,
            on_error=spec.on_error,
            timeout_s=spec.timeout_ms / 1000.0,
        )


def _uses(pipeline: GuardPipeline, guards: Collection[int]) -> bool:
    """The pipeline runs one of these guards (by id)."""
    slots = (*pipeline.input, *pipeline.parallel, *pipeline.output)
    return any(id(slot.guard) in guards for slot in slots)


# --- kinds -------------------------------------------------------------------------


def _build_denylist(options: DenylistOptions, shadow: bool, registry: GuardRegistry) -> TextGuard:
    return DenylistGuard(options)


def _build_pii(options: PiiOptions, shadow: bool, registry: GuardRegistry) -> TextGuard:
    # Presidio and spaCy load here, the first time a policy uses `pii`.
    from rails.pii.engine import PiiEngine
    from rails.pii.guard import PiiGuard

    nlp_model = registry.nlp_model
    engine = registry.engine(("pii", nlp_model), lambda: PiiEngine.build(nlp_model=nlp_model))
    return PiiGuard(engine, options, shadow=shadow)


def _build_nemo(options: NemoOptions, shadow: bool, registry: GuardRegistry) -> TextGuard:
    # NeMo Guardrails loads here, the first time a policy uses `nemo`.
    from rails.nemo.engine import NemoEngine
    from rails.nemo.guard import NemoGuard

    dirs = registry.rails_configs_dirs
    engine = registry.engine(("nemo", dirs), lambda: NemoEngine(registry.rails_llm, dirs))
    return NemoGuard(engine, options, shadow=shadow)


def _pii_problems(options: PiiOptions) -> list[tuple[str, str]]:
    # The PII package's own compile checks (no engine needed), so a policy that parses
    # also builds. Entity names are checked only when the guard is built (engine-bound).
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for i, rec in enumerate(options.recognizers):
        at = f".recognizers[{i}]"
        if _failed(problems, f"{at}.pattern", partial(compile_pattern, rec.pattern, "pattern")):
            continue
        if not _failed(problems, at, partial(compile_custom, rec)) and rec.name in names:
            problems.append((f"{at}.name", "Two recognizers have the same name"))
        names.add(rec.name)
    for i, pattern in enumerate(options.allow_patterns):
        at = f".allow_patterns[{i}]"
        _failed(problems, at, partial(compile_pattern, pattern, "pattern", allow_empty=True))
    if not 0.0 <= options.score_threshold <= 1.0:
        problems.append((".score_threshold", "Expected a number between 0 and 1"))
    if options.mask_keep < 0:
        problems.append((".mask_keep", "Expected a number >= 0"))
    return problems


def _failed(problems: list[tuple[str, str]], at: str, check: Callable[[], object]) -> bool:
    """Run a PII compile check; its `ValueError` becomes a problem at `at`."""
    try:
        check()
    except ValueError as exc:
        reason = str(exc).removeprefix("pattern: ")
        problems.append((at, reason[:1].upper() + reason[1:]))
        return True
    return False


@dataclass(frozen=True, slots=True)
class _PiiRestorer:
    restore_text: Callable[[str, dict[str, str]], str]
    filter_type: Callable[[dict[str, str]], StreamFilter]

    def restore(self, text: str, vault: dict[str, str]) -> str:
        return self.restore_text(text, vault)

    def open_stream(self, vault: dict[str, str]) -> StreamFilter:
        return self.filter_type(vault)


def _pii_restorer() -> Restorer:
    from rails.pii.actions import restore
    from rails.pii.stream import RestoreFilter

    return _PiiRestorer(restore, RestoreFilter)


KINDS: Mapping[str, GuardKind[Any]] = {
    "pii": GuardKind(PiiOptions, _build_pii, _pii_problems, _pii_restorer),
    "denylist": GuardKind(DenylistOptions, _build_denylist, denylist_problems),
    "nemo": GuardKind(NemoOptions, _build_nemo, nemo_problems),
}
"""Guard kinds a policy may use, by the key it is written under."""
