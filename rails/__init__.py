"""Railgate rails: content safety as a library with no HTTP in it.

The gateway reaches it through `gateway.guards.ContentStages`; the guard interface,
the pipeline and the PII and NeMo guards live here.
"""

__all__: list[str] = []
