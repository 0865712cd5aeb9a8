"""``OpenTelemetryMiddleware``: the spans and metrics of the messaging conventions,
from the hooks of ``aioqueue.middleware``.

One job's trace, as the conventions draw it (span kinds in brackets):

    send {queue} [PRODUCER]        enqueue: its context goes into the job's headers
    process {queue} [CONSUMER]     each attempt, linked to that context (or its child)
    settle {queue} [CLIENT]        the write of each attempt's outcome, after it

``enqueue_many`` is a batch API: by default each job gets a ``create {queue}``
[PRODUCER] span whose context it carries, and the call one ``send {queue}`` [CLIENT]
span linked to all of them (``create_spans=False``: one PRODUCER ``send`` span whose
context every job of the batch carries).
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanKind, Status, StatusCode

from aioqueue import __version__
from aioqueue._hooks import HOOK_NAMES
from aioqueue.middleware import Attempt, AttemptResult, Enqueue, Message, Middleware
from aioqueue.otel import _names as n
from aioqueue.otel._metrics import Instruments

try:  # the API's stand-in until the app sets a MeterProvider: private to the API
    from opentelemetry.metrics._internal import _ProxyMeterProvider
except ImportError:  # pragma: no cover - a later API that moved it: measure always
    _ProxyMeterProvider = type(None)  # type: ignore[misc,assignment]

__all__ = ["OpenTelemetryMiddleware"]

_SEND = "aioqueue.otel.send"  # keys of the hooks' scratch space (Enqueue/Attempt.state)
_PROCESS = "aioqueue.otel.process"
_SETTLE = "aioqueue.otel.settle"
TRACEPARENT = "traceparent"


class OpenTelemetryMiddleware(Middleware):
    """Traces and measures enqueues and attempts with OpenTelemetry.

    Give it to ``Queue(..., middleware=[...])`` and ``Worker(..., middleware=[...])``,
    or let ``AioqueueInstrumentor().instrument()`` add it to every Queue and Worker.

    Args:
        tracer_provider: where spans go; default: the global one (set by the app).
        meter_provider: where metrics go; default: the global one. Nothing is
            recorded until the app configures one.
        parent: make each attempt's ``process`` span a child of the job's creation
            context (one trace from the request to the job), instead of the
            conventions' default: a span of its own trace, linked to it.
        create_spans: give each job of an ``enqueue_many`` its own ``create`` span
            (the conventions' recommendation for batch APIs).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        parent: bool = False,
        create_spans: bool = True,
    ) -> None:
        self.parent = parent
        self.create_spans = create_spans
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer = trace.get_tracer(
            "aioqueue.otel",
            __version__,
            tracer_provider=tracer_provider,
            schema_url="https://opentelemetry.io/schemas/1.44.0",
        )
        self._metrics = Instruments(meter_provider)
        # With no SDK the hooks make no span and parse no header: the cost of the
        # extra installed but unused stays within noise (benchmarks/otel_overhead.py).
        self._tracing = _Recording(tracer_provider, trace.get_tracer_provider, _SILENT,
                                   trace.ProxyTracerProvider)  # fmt: skip
        self._measuring = _Recording(meter_provider, metrics.get_meter_provider,
                                     _SILENT_METERS, _ProxyMeterProvider)  # fmt: skip
        if self._tracing.known is False and self._measuring.known is False:
            # both providers given (or set globally) and no-ops: they stay so, and the
            # hooks, which would each return at once, are not called at all
            for hook in HOOK_NAMES:
                setattr(self, hook, None)

    # ---- producer side

    def before_enqueue(self, enqueue: Enqueue) -> None:
        """Starts the ``send`` span (and the ``create`` spans of a batch); writes the
        creation context into each job's headers."""
        if self._tracing.known is False and self._measuring.known is False:
            return  # both providers known to be no-ops: nothing to make
        if not self._tracing():
            if self._measuring():
                enqueue.state[_SEND] = None  # measured, not traced
            return
        messages = enqueue.messages
        many = enqueue.many
        queue = _common_queue(messages)
        attributes: dict[str, Any] = {
            n.MESSAGING_SYSTEM: n.SYSTEM,
            n.OPERATION_TYPE: "send",
            n.OPERATION_NAME: "send",
        }
        if queue is not None:
            attributes[n.DESTINATION_NAME] = queue
        if many:
            attributes[n.BATCH_MESSAGE_COUNT] = len(messages)
        else:
            attributes[n.MESSAGE_ID] = messages[0].job_id
            attributes[n.TASK_NAME] = messages[0].task
        # a creation context the caller put in a job's headers is kept as it is,
        # and the send span links to it (as to each create span)
        links = [_custom_link(m) for m in messages if TRACEPARENT in m.headers]
        with_create = many and self.create_spans
        if with_create:
            links.extend(self._create(m) for m in messages if TRACEPARENT not in m.headers)
        start = _epoch_ns(enqueue.started)
        span = self._tracer.start_span(
            f"send {queue}" if queue is not None else "send",
            kind=SpanKind.CLIENT if with_create else SpanKind.PRODUCER,
            attributes=attributes,
            links=[link for link in links if link is not None],
            start_time=start,
        )
        current = trace.set_span_in_context(span)
        if not with_create:
            for message in messages:
                if TRACEPARENT not in message.headers:
                    propagate.inject(message.headers, context=current)
        # current for the call, so spans of its Redis commands (if traced) nest under it
        enqueue.state[_SEND] = (span, context.attach(current), start)

    def _create(self, message: Message) -> Link | None:
        span = self._tracer.start_span(
            f"create {message.queue}",
            kind=SpanKind.PRODUCER,
            attributes={
                n.MESSAGING_SYSTEM: n.SYSTEM,
                n.DESTINATION_NAME: message.queue,
                n.OPERATION_TYPE: "create",
                n.OPERATION_NAME: "create",
                n.MESSAGE_ID: message.job_id,
                n.TASK_NAME: message.task,
            },
        )
        propagate.inject(message.headers, context=trace.set_span_in_context(span))
        span.end()
        created = span.get_span_context()
        return Link(created) if created.is_valid else None

    def after_enqueue(self, enqueue: Enqueue, error: BaseException | None) -> None:
        """Ends the ``send`` span (failed when the call raised); counts the jobs sent."""
        sent = enqueue.state.pop(_SEND, _ABSENT)
        if sent is _ABSENT:
            return  # neither traced nor measured
        elapsed = time.perf_counter() - enqueue.started
        queue = _common_queue(enqueue.messages)
        attributes: dict[str, str] = {n.MESSAGING_SYSTEM: n.SYSTEM, n.OPERATION_NAME: "send"}
        if queue is not None:
            attributes[n.DESTINATION_NAME] = queue
        kind = n.error_type_of(error) if error is not None else None
        if kind is not None:
            attributes[n.ERROR_TYPE] = kind
        if sent is not None:
            span, token, start = sent
            context.detach(token)
            if kind is not None:
                _fail(span, kind, str(error), error)
            span.end(end_time=start + int(elapsed * 1e9))
        self._metrics.sent.add(len(enqueue.messages), attributes)
        attributes[n.OPERATION_TYPE] = "send"
        self._metrics.operation_duration.record(elapsed, attributes)

    # ---- worker side

    def before_attempt(self, attempt: Attempt) -> None:
        """Starts the attempt's ``process`` span, linked to (or, with ``parent``, a child
        of) the creation context in its headers, and makes it current for the task."""
        if self._tracing.known is False and self._measuring.known is False:
            return  # both providers known to be no-ops: nothing to make
        if not self._tracing():
            if self._measuring():
                attempt.state[_PROCESS] = None  # measured, not traced
                self._metrics.consumed.add(1, _consumer_attributes(attempt, "process"))
            return
        self._metrics.consumed.add(1, _consumer_attributes(attempt, "process"))
        creation = propagate.extract(attempt.headers)
        created = trace.get_current_span(creation).get_span_context()
        links = [Link(created)] if created.is_valid else []
        parent_context: context.Context | None = None
        if self.parent and created.is_valid:
            # the conventions' opt-in: child of the creation context, which stays a
            # link too, and a link to the ambient span the worker may run in
            ambient = trace.get_current_span().get_span_context()
            if ambient.is_valid:
                links.append(Link(ambient))
            parent_context = creation
        start = _epoch_ns(attempt.started)
        span = self._tracer.start_span(
            f"process {attempt.queue}",
            context=parent_context,
            kind=SpanKind.CONSUMER,
            attributes={
                n.MESSAGING_SYSTEM: n.SYSTEM,
                n.DESTINATION_NAME: attempt.queue,
                n.OPERATION_TYPE: "process",
                n.OPERATION_NAME: "process",
                n.MESSAGE_ID: attempt.job_id,
                n.CLIENT_ID: attempt.worker_id,
                n.TASK_NAME: attempt.task,
                n.JOB_ATTEMPT: attempt.attempt,
            },
            links=links,
            start_time=start,
        )
        # current while the task runs: its own spans and log lines belong to the attempt
        token = context.attach(trace.set_span_in_context(span, parent_context))
        attempt.state[_PROCESS] = (span, token, start, links[:1])

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        """Ends the ``process`` span with the attempt's outcome and error, if any."""
        begun = attempt.state.pop(_PROCESS, _ABSENT)
        if begun is _ABSENT:
            return  # neither traced nor measured
        elapsed = time.perf_counter() - attempt.started
        attributes = _consumer_attributes(attempt, "process")
        failed = n.attempt_error(result)
        if failed is not None:
            attributes[n.ERROR_TYPE] = failed[0]
        self._metrics.process_duration.record(elapsed, attributes)
        settle: tuple[Any, ...] = (None, (), 0)
        if begun is not None:
            span, token, start, creation = begun
            context.detach(token)
            span.set_attribute(n.JOB_OUTCOME, result.outcome)
            if failed is not None:
                _fail(span, *failed, result.error)
            end = start + int(elapsed * 1e9)
            span.end(end_time=end)
            settle = (span.get_span_context(), creation, end)
        attempt.state[_SETTLE] = (*settle, time.perf_counter())

    def on_settled(self, attempt: Attempt, result: AttemptResult) -> None:
        """Records the ``settle`` span: from the end of the attempt to its outcome's write."""
        processed = attempt.state.pop(_SETTLE, None)
        if processed is None:
            return
        process, creation, start, began = processed
        elapsed = time.perf_counter() - began  # the outcome's wait in the batch, its write
        attributes = _consumer_attributes(attempt, "settle")
        if result.written is False:
            attributes[n.ERROR_TYPE] = n.STALE_DELIVERY
        self._metrics.operation_duration.record(elapsed, attributes)
        if process is None:
            return  # the attempt was not traced
        span = self._tracer.start_span(
            f"settle {attempt.queue}",
            context=trace.set_span_in_context(NonRecordingSpan(process)),
            kind=SpanKind.CLIENT,
            attributes={
                n.MESSAGING_SYSTEM: n.SYSTEM,
                n.DESTINATION_NAME: attempt.queue,
                n.OPERATION_TYPE: "settle",
                n.OPERATION_NAME: "settle",
                n.MESSAGE_ID: attempt.job_id,
                n.CLIENT_ID: attempt.worker_id,
                n.TASK_NAME: attempt.task,
                n.JOB_ATTEMPT: attempt.attempt,
                n.JOB_OUTCOME: result.outcome,
            },
            links=creation,
            start_time=start,
        )
        if result.written is False:
            _fail(span, n.STALE_DELIVERY, "refused: the delivery belongs to another worker", None)
        span.end(end_time=start + int(elapsed * 1e9))


_SILENT = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_SILENT_METERS: tuple[type, ...] = (metrics.NoOpMeterProvider, _ProxyMeterProvider)
_ABSENT = object()


class _Recording:
    """Whether a provider records anything: not while it is the global stand-in or a
    no-op one. The stand-in is asked again each time (the app may set its provider
    later); a provider given, or the global one once set, is final: ``known``."""

    __slots__ = ("_current", "_given", "_proxy", "_silent", "known")

    def __init__(self, given: Any, current: Any, silent: tuple[type, ...], proxy: type) -> None:
        self._given, self._current, self._silent, self._proxy = given, current, silent, proxy
        self.known: bool | None = None
        self()  # a provider given, or the global one already set, is known from here on

    def __call__(self) -> bool:
        known = self.known
        if known is not None:
            return known
        provider = self._given or self._current()
        recording = not isinstance(provider, self._silent)
        if not isinstance(provider, self._proxy):
            self.known = recording
        return recording


def _epoch_ns(started: float) -> int:
    """The epoch time (ns) of ``started`` (a perf_counter reading): a span begins where
    the hook's clock did, so that its duration is the one the metric records."""
    return time.time_ns() - int((time.perf_counter() - started) * 1e9)


def _fail(span: Span, kind: str, message: str, error: BaseException | None) -> None:
    span.set_attribute(n.ERROR_TYPE, kind)
    if error is not None:
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, message or None))


def _consumer_attributes(attempt: Attempt, operation: str) -> dict[str, str | int]:
    return {
        n.MESSAGING_SYSTEM: n.SYSTEM,
        n.DESTINATION_NAME: attempt.queue,
        n.OPERATION_TYPE: operation,
        n.OPERATION_NAME: operation,
        n.TASK_NAME: attempt.task,
    }


def _common_queue(messages: list[Message]) -> str | None:
    """The queue of every job of the call, None when they go to several."""
    first = messages[0].queue if messages else None
    return first if all(m.queue == first for m in messages) else None


def _custom_link(message: Message) -> Link | None:
    given = trace.get_current_span(propagate.extract(message.headers)).get_span_context()
    return Link(given) if given.is_valid else None
