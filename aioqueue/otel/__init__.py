"""OpenTelemetry traces and metrics for aioqueue (``pip install 'aioqueue[otel]'``,
which brings ``opentelemetry-api`` only: the app picks its SDK and exporters).

Following the OpenTelemetry messaging semantic conventions: a ``send {queue}`` span
around each enqueue, whose context travels in the job's (signed) envelope as W3C
``traceparent``/``tracestate``; a ``process {queue}`` span for each attempt, linked to
it; a ``settle {queue}`` span for the write of the attempt's outcome. Metrics
``messaging.client.sent.messages``, ``messaging.client.operation.duration``,
``messaging.client.consumed.messages`` and ``messaging.process.duration`` once the
app configures a MeterProvider.

    from aioqueue.otel import AioqueueInstrumentor

    AioqueueInstrumentor().instrument()

or ``Queue(..., middleware=[OpenTelemetryMiddleware()])`` and the same for ``Worker``.
``add_trace_ids`` puts ``trace_id`` and ``span_id`` into structlog events (the CLI's
logging has it already). See docs/tracing.md.
"""

from __future__ import annotations

try:
    import opentelemetry.trace  # noqa: F401
except ImportError as error:  # pragma: no cover - the extra is part of the dev install
    raise ImportError(
        "aioqueue.otel needs opentelemetry-api: pip install 'aioqueue[otel]'"
    ) from error

from aioqueue.logging import add_trace_ids
from aioqueue.otel._instrumentor import AioqueueInstrumentor
from aioqueue.otel._middleware import OpenTelemetryMiddleware

__all__ = ["AioqueueInstrumentor", "OpenTelemetryMiddleware", "add_trace_ids"]
