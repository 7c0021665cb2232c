"""Telemetry: what the gateway tells the outside world about each call.

    tracecontext  trace and span ids of a call; the `traceparent` sent upstream
    observer      the seam: `CallObserver`s get every finished call (`finished`) and
                  every exchange that never became a call (`exchanged`)
    spans         the OpenTelemetry spans of a call (server, auth, limits, guards,
                  `chat {model}` with the GenAI semantic-convention attributes)
    otlp          OTLP/HTTP JSON encoding; `exporter` ships batches off the event loop's
                  critical path, bounded, with drops counted
    langfuse      one Langfuse generation per call, to the tenant's or the global project
    metrics       per-call Prometheus series (`gateway.metrics` is the registry)
    logs          JSON application logs and the access log, off the event loop
    sentry        optional error reporting (`SENTRY_DSN`)

Nothing here may slow down or fail a request: observers run after the answer was sent,
their exceptions are contained, and every queue is bounded with its drops counted.
"""
