"""Optional NER entities (PERSON, LOCATION, …) from an installed spaCy model.

Off by default: Railgate ships no model and never downloads one. When a policy
names `nlp_model` and it is installed (a package name or a path to a saved
pipeline), Presidio's `SpacyNlpEngine` and `SpacyRecognizer` run it over the whole
text: NER cannot use the candidate scan, so expect the model's own cost per KB.
"""

from __future__ import annotations

from pathlib import Path

import spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from rails.pii.presidio import build_analyzer
from rails.pii.spans import Span

__all__ = ["NER_ENTITIES", "NerDetector"]

NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP"})


class NerDetector:
    """Runs a spaCy model through Presidio for the NER entities."""

    entities = NER_ENTITIES

    def __init__(self, analyzer: AnalyzerEngine) -> None:
        self._analyzer = analyzer

    @classmethod
    def load(cls, model: str) -> NerDetector:
        """Load `model` (installed package or path); `ValueError` if it is not there."""
        if not (spacy.util.is_package(model) or Path(model).exists()):
            raise ValueError(
                f"spaCy model {model!r} is not installed; install it into the image "
                "(Railgate never downloads models at run time)"
            )
        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
        engine.load()
        recognizer = SpacyRecognizer(supported_entities=sorted(NER_ENTITIES))
        return cls(build_analyzer(engine, [recognizer]))

    def find(self, text: str, wanted: frozenset[str], threshold: float) -> list[Span]:
        entities = sorted(wanted & NER_ENTITIES)
        if not entities:
            return []
        results = self._analyzer.analyze(
            text, language="en", entities=entities, score_threshold=threshold
        )
        return [Span(r.entity_type, r.start, r.end, float(r.score)) for r in results]
