"""Railgate: a self-hosted LLM guardrails gateway (the HTTP service)."""

__version__ = "0.1.0"
