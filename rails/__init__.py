"""Railgate rails: content safety as a library with no HTTP in it.

    policy = rails.policy_from_yaml(text)          # or parse_policy(decoded_document)
    pipeline = registry.pipeline(policy)           # registry = GuardRegistry(), one per process
    texts = await pipeline.run("input", texts, ctx)
    stream = pipeline.open_stream(ctx)             # None: relay the answer untouched

The gateway reaches it through `gateway.guards.ContentStages`. Importing `rails` does not
import Presidio: the registry loads it the first time a policy uses the `pii` kind.
"""

from rails.base import (
    Blocked,
    ConversationGuard,
    Finding,
    GuardContext,
    GuardFailed,
    ModelCall,
    Stage,
    StreamFilter,
    StreamGuard,
    TextGuard,
)
from rails.pipeline import GuardPipeline, GuardSlot
from rails.policy import (
    DEFAULT_POLICY,
    GuardSpec,
    Policy,
    PolicyError,
    dump_policy,
    parse_policy,
    policy_from_yaml,
)
from rails.registry import GuardRegistry

__all__ = [
    "DEFAULT_POLICY",
    "Blocked",
    "ConversationGuard",
    "Finding",
    "GuardContext",
    "GuardFailed",
    "GuardPipeline",
    "GuardRegistry",
    "GuardSlot",
    "GuardSpec",
    "ModelCall",
    "Policy",
    "PolicyError",
    "Stage",
    "StreamFilter",
    "StreamGuard",
    "TextGuard",
    "dump_policy",
    "parse_policy",
    "policy_from_yaml",
]
