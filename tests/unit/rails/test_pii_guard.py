"""The guard as the pipeline sees it: protocols, load-time validation, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy

from rails.base import StreamGuard, TextGuard
from rails.pii.actions import restore
from rails.pii.engine import PiiEngine
from rails.pii.guard import PiiGuard
from rails.pii.options import PiiOptions
from rails.pii.stream import PiiStreamFilter
from rails.pii.testing import make_ctx, shared_engine


def test_implements_text_and_stream_guard() -> None:
    guard = PiiGuard(shared_engine(), PiiOptions())
    assert guard.name == "pii"
    assert isinstance(guard, TextGuard) and isinstance(guard, StreamGuard)
    assert isinstance(guard.open_stream(make_ctx()), PiiStreamFilter)


def test_invalid_options_fail_when_the_guard_is_built() -> None:
    with pytest.raises(ValueError, match="unknown entity 'EMAIL'"):
        PiiGuard(shared_engine(), PiiOptions(entities=("EMAIL",)))


async def test_pseudonymize_round_trip() -> None:
    """The provider sees placeholders; the user reads the values back."""
    guard = PiiGuard(shared_engine(), PiiOptions(action="pseudonymize"))
    ctx = make_ctx()
    prompt = "I am ann@example.com, call +234 803 123 4567."
    sent = await guard.check(prompt, "input", ctx)
    assert "ann@example.com" not in sent and "803 123 4567" not in sent
    email, phone = sorted(ctx.vault, key=lambda p: p.startswith("<PHONE"))
    answer = f"Sure {email}, I will call {phone} and not <PHONE_NUMBER_abcdef>."
    checked = await guard.check(answer, "output", ctx)
    assert checked == answer  # placeholders are not PII
    assert restore(checked, ctx.vault) == (
        "Sure ann@example.com, I will call +234 803 123 4567 and not <PHONE_NUMBER_abcdef>."
    )


async def test_nlp_model_option_is_wired_to_spacy_ner(tmp_path: Path) -> None:
    """No model ships with Railgate; a saved pipeline with an entity ruler stands in."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Ada Obi"}])  # type: ignore[attr-defined]
    nlp.to_disk(tmp_path / "model")
    engine = PiiEngine.build(nlp_model=str(tmp_path / "model"))
    assert {"PERSON", "LOCATION"} <= engine.supported_entities
    guard = PiiGuard(engine, PiiOptions(entities=("PERSON", "EMAIL_ADDRESS")))
    out = await guard.check("Hello Ada Obi (ada@example.com)", "input", make_ctx())
    assert out == "Hello <PERSON> (<EMAIL_ADDRESS>)"
