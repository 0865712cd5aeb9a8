"""aioqueue.otel against a real Redis and a real worker in this event loop: the spans,
links and attributes the OpenTelemetry messaging conventions ask for, recorded by the
SDK's in-memory exporter; the trace context through a signed envelope; the metrics;
the instrumentor; trace ids in structlog events."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import anyio
import pytest
import structlog
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aioqueue import Queue, QueueFull, Worker, current_job, task
from aioqueue.middleware import Attempt, AttemptResult, Middleware
from aioqueue.otel import AioqueueInstrumentor, OpenTelemetryMiddleware, add_trace_ids
from tests.conftest import running

pytestmark = pytest.mark.anyio

SIGNING_KEY = "otel-test-key"


class Recorder(SpanExporter):
    """The in-memory exporter, plus a wait for a span that ends later in another task
    (a settle span ends after the client has its result)."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self._waits: list[tuple[Callable[[Sequence[ReadableSpan]], bool], anyio.Event]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.memory.export(spans)
        finished = self.memory.get_finished_spans()
        for ready, event in self._waits:
            if ready(finished):
                event.set()
        return result

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.memory.get_finished_spans()

    async def until(self, ready: Callable[[Sequence[ReadableSpan]], bool]) -> None:
        event = anyio.Event()
        self._waits.append((ready, event))
        if ready(self.spans):
            return
        with anyio.fail_after(10):
            await event.wait()


class SettledCount(Middleware):
    """Says when ``n`` outcomes were written (the client may see a result first)."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.done = anyio.Event()

    def on_settled(self, attempt: Attempt, result: AttemptResult) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def provider(recorder: Recorder) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    return provider


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def middleware(provider: TracerProvider, reader: InMemoryMetricReader) -> OpenTelemetryMiddleware:
    return OpenTelemetryMiddleware(
        tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader])
    )


@task(max_attempts=3, backoff=0.01, backoff_max=0.01)
async def signup_email(user_id: int) -> str:
    if current_job().attempt == 1:
        raise ConnectionError("smtp refused")
    return f"sent {user_id}"


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted(
        (s for s in spans if s.name.startswith(prefix)),
        key=lambda s: s.attributes.get("aioqueue.job.attempt", 0) if s.attributes else 0,
    )


def settled(n: int) -> Callable[[Sequence[ReadableSpan]], bool]:
    return lambda spans: len(named(spans, "settle ")) >= n


async def request_then_two_attempts(
    redis_url: str,
    queue_name: str,
    provider: TracerProvider,
    recorder: Recorder,
    middleware: OpenTelemetryMiddleware,
) -> tuple[ReadableSpan, str]:
    """A request span enqueues a signed job; attempt 1 raises, attempt 2 succeeds."""
    tracer = provider.get_tracer("web")
    last = SettledCount(2)  # after ours: hooks run in the order given
    worker = Worker(
        [signup_email],
        redis_url=redis_url,
        queues=[queue_name],
        signing_key=SIGNING_KEY,
        middleware=[middleware, last],
    )
    async with Queue(
        redis_url, name=queue_name, signing_key=SIGNING_KEY, middleware=[middleware]
    ) as queue:
        with tracer.start_as_current_span("POST /signup", kind=SpanKind.SERVER):
            job = await queue.enqueue(signup_email, 7)
        async with running(worker):
            assert await job.result(timeout=10) == "sent 7"
            with anyio.fail_after(10):
                await last.done.wait()
    (request,) = [s for s in recorder.spans if s.name == "POST /signup"]
    return request, job.id


def common(queue_name: str, job_id: str, operation: str) -> dict[str, object]:
    return {
        "messaging.system": "aioqueue",
        "messaging.destination.name": queue_name,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": job_id,
        "aioqueue.task.name": signup_email.name,
    }


async def test_a_request_its_job_a_failed_attempt_and_a_retry_follow_the_conventions(
    redis_url: str,
    queue_name: str,
    provider: TracerProvider,
    recorder: Recorder,
    middleware: OpenTelemetryMiddleware,
) -> None:
    request, job_id = await request_then_two_attempts(
        redis_url, queue_name, provider, recorder, middleware
    )
    spans = recorder.spans
    assert sorted(s.name for s in spans) == sorted(
        ["POST /signup", f"send {queue_name}"]
        + [f"process {queue_name}", f"settle {queue_name}"] * 2
    )
    (send,) = named(spans, "send ")
    first, second = named(spans, "process ")
    settle1, settle2 = named(spans, "settle ")

    # send: PRODUCER, a child of the request; its context is the job's creation context
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.context.span_id
    assert send.context.trace_id == request.context.trace_id
    assert dict(send.attributes or {}) == common(queue_name, job_id, "send")
    assert send.links == () and send.status.status_code is StatusCode.UNSET

    worker_id = first.attributes["messaging.client.id"] if first.attributes else None
    assert isinstance(worker_id, str) and worker_id
    for number, (process, settle) in enumerate([(first, settle1), (second, settle2)], 1):
        outcome = "retried" if number == 1 else "complete"
        # process: CONSUMER, a trace of its own, linked to the creation context: the
        # trace id came through the signed envelope
        assert process.kind is SpanKind.CONSUMER
        assert process.parent is None
        assert process.context.trace_id != request.context.trace_id
        assert [link.context.span_id for link in process.links] == [send.context.span_id]
        assert [link.context.trace_id for link in process.links] == [request.context.trace_id]
        expected = {
            **common(queue_name, job_id, "process"),
            "messaging.client.id": worker_id,
            "aioqueue.job.attempt": number,
            "aioqueue.job.outcome": outcome,
        }
        if number == 1:
            expected["error.type"] = "builtins.ConnectionError"
        assert dict(process.attributes or {}) == expected
        # settle: CLIENT, a child of its attempt, linked to the creation context too
        assert settle.kind is SpanKind.CLIENT
        assert settle.parent is not None and settle.parent.span_id == process.context.span_id
        assert [link.context.span_id for link in settle.links] == [send.context.span_id]
        assert dict(settle.attributes or {}) == {
            **common(queue_name, job_id, "settle"),
            "messaging.client.id": worker_id,
            "aioqueue.job.attempt": number,
            "aioqueue.job.outcome": outcome,
        }
        assert settle.status.status_code is StatusCode.UNSET
        assert settle.start_time is not None and process.end_time is not None
        assert settle.start_time >= process.end_time
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "smtp refused"
    assert [e.name for e in first.events] == ["exception"]
    assert first.events[0].attributes is not None
    assert first.events[0].attributes["exception.type"] == "ConnectionError"
    assert second.status.status_code is StatusCode.UNSET and second.events == ()


async def test_with_parent_the_attempts_are_children_of_the_creation_context(
    redis_url: str, queue_name: str, provider: TracerProvider, recorder: Recorder
) -> None:
    middleware = OpenTelemetryMiddleware(tracer_provider=provider, parent=True)
    request, _ = await request_then_two_attempts(
        redis_url, queue_name, provider, recorder, middleware
    )
    (send,) = named(recorder.spans, "send ")
    attempts = named(recorder.spans, "process ")
    assert len(attempts) == 2
    for process in attempts:
        assert process.context.trace_id == request.context.trace_id  # one trace, signed
        assert process.parent is not None and process.parent.span_id == send.context.span_id
        assert [link.context.span_id for link in process.links] == [send.context.span_id]


async def test_enqueue_many_gives_each_job_a_create_span_and_links_the_send_to_them(
    redis_url: str, queue_name: str, provider: TracerProvider, recorder: Recorder
) -> None:
    middleware = OpenTelemetryMiddleware(tracer_provider=provider)
    async with Queue(redis_url, name=queue_name, middleware=[middleware]) as queue:
        jobs = await queue.enqueue_many([signup_email.call(i) for i in range(3)])
    creates = named(recorder.spans, "create ")
    (send,) = named(recorder.spans, "send ")
    assert [s.kind for s in creates] == [SpanKind.PRODUCER] * 3
    assert sorted((s.attributes or {})["messaging.message.id"] for s in creates) == sorted(
        j.id for j in jobs
    )
    assert send.kind is SpanKind.CLIENT and send.name == f"send {queue_name}"
    assert dict(send.attributes or {}) == {
        "messaging.system": "aioqueue",
        "messaging.destination.name": queue_name,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.batch.message_count": 3,
    }
    assert {link.context.span_id for link in send.links} == {s.context.span_id for s in creates}

    recorder.memory.clear()
    single = OpenTelemetryMiddleware(tracer_provider=provider, create_spans=False)
    async with Queue(redis_url, name=queue_name, middleware=[single]) as queue:
        await queue.enqueue_many([signup_email.call(i) for i in range(2)])
    (send,) = recorder.spans
    assert send.kind is SpanKind.PRODUCER and send.links == ()
    assert (send.attributes or {})["messaging.batch.message_count"] == 2


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "metrics-only"])
async def test_the_metrics_of_the_conventions(
    redis_url: str,
    queue_name: str,
    provider: TracerProvider,
    recorder: Recorder,
    reader: InMemoryMetricReader,
    traced: bool,
) -> None:
    middleware = OpenTelemetryMiddleware(
        tracer_provider=provider if traced else trace.NoOpTracerProvider(),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    await request_then_two_attempts(redis_url, queue_name, provider, recorder, middleware)
    assert len(recorder.spans) == (6 if traced else 1)  # untraced: the request's alone
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, object], float]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count  # type: ignore[attr-defined]
                    points.setdefault(metric.name, []).append((dict(point.attributes), value))
    base = {"messaging.system": "aioqueue", "messaging.destination.name": queue_name}
    assert points["messaging.client.sent.messages"] == [
        ({**base, "messaging.operation.name": "send"}, 1)
    ]
    consumer = {
        **base,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "aioqueue.task.name": signup_email.name,
    }
    assert points["messaging.client.consumed.messages"] == [(consumer, 2)]
    assert sorted(points["messaging.process.duration"], key=lambda p: len(p[0])) == [
        (consumer, 1),
        ({**consumer, "error.type": "builtins.ConnectionError"}, 1),
    ]
    operations = {
        str(attrs["messaging.operation.type"]): count
        for attrs, count in points["messaging.client.operation.duration"]
    }
    assert operations == {"send": 1, "settle": 2}


async def test_the_instrumentor_adds_the_middleware_to_queues_and_workers_made_after(
    redis_url: str, queue_name: str, provider: TracerProvider, recorder: Recorder
) -> None:
    before = Queue(redis_url, name=queue_name)
    instrumentor = AioqueueInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert instrumentor.is_instrumented
        AioqueueInstrumentor().instrument()  # once is enough: no second middleware
        own = Queue(
            redis_url,
            name=queue_name,
            middleware=[OpenTelemetryMiddleware(tracer_provider=provider)],
        )
        traced = Queue(redis_url, name=queue_name)
        worker = Worker([nothing], redis_url=redis_url, queues=[queue_name])
    finally:
        instrumentor.uninstrument()
    assert not instrumentor.is_instrumented
    after = Queue(redis_url, name=queue_name)
    untraced_worker = Worker([nothing], redis_url=redis_url, queues=[queue_name])
    ids = []
    for queue in (before, own, traced, after):
        async with queue:
            ids.append((await queue.enqueue(nothing)).id)
    # own: its own middleware only, not a second one; before and after: none
    assert [s.name for s in recorder.spans] == [f"send {queue_name}"] * 2
    async with Queue(redis_url, name=queue_name) as queue:
        async with running(worker):
            for job_id in ids:
                await queue.job(job_id).result(timeout=10)
            await recorder.until(settled(4))
        assert len(named(recorder.spans, "process ")) == 4
        recorder.memory.clear()
        job = await queue.enqueue(nothing)
        async with running(untraced_worker):
            await job.result(timeout=10)
    assert recorder.spans == ()


@task
async def nothing() -> None:
    pass


def test_add_trace_ids_puts_the_active_span_into_a_structlog_event(
    provider: TracerProvider,
) -> None:
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
    with provider.get_tracer("t").start_as_current_span("s") as span:
        event = add_trace_ids(None, "info", {"event": "x"})
    ctx = span.get_span_context()
    assert event == {
        "event": "x",
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
    }
    assert len(event["trace_id"]) == 32 and len(event["span_id"]) == 16


@task
async def logs_a_line() -> None:
    structlog.get_logger().info("inside.the.task")


@pytest.fixture
def captured() -> Iterator[list[dict[str, object]]]:
    lines: list[dict[str, object]] = []

    def keep(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
        lines.append(dict(event))
        raise structlog.DropEvent

    old = structlog.get_config()
    structlog.configure(processors=[add_trace_ids, keep], cache_logger_on_first_use=False)
    yield lines
    structlog.configure(**old)


async def test_a_jobs_log_lines_carry_its_attempts_trace_and_span_ids(
    redis_url: str,
    queue_name: str,
    recorder: Recorder,
    middleware: OpenTelemetryMiddleware,
    captured: list[dict[str, object]],
) -> None:
    worker = Worker(
        [logs_a_line], redis_url=redis_url, queues=[queue_name], middleware=[middleware]
    )
    async with Queue(redis_url, name=queue_name) as queue:
        job = await queue.enqueue(logs_a_line)
        async with running(worker):
            await job.result(timeout=10)
            await recorder.until(settled(1))
    (process,) = named(recorder.spans, "process ")
    # the task's own line, and the worker's job.completed line about it
    for name in ("inside.the.task", "job.completed"):
        (line,) = [e for e in captured if e["event"] == name]
        assert line["trace_id"] == format(process.context.trace_id, "032x"), name
        assert line["span_id"] == format(process.context.span_id, "016x"), name
    (started,) = [e for e in captured if e["event"] == "worker.started"]
    assert "trace_id" not in started  # no span around the worker itself


async def test_an_enqueue_that_raises_ends_its_send_span_failed(
    redis_url: str, queue_name: str, provider: TracerProvider, recorder: Recorder
) -> None:
    middleware = OpenTelemetryMiddleware(tracer_provider=provider)
    async with Queue(redis_url, name=queue_name, max_length=1, middleware=[middleware]) as queue:
        await queue.enqueue(nothing)
        with pytest.raises(QueueFull):
            await queue.enqueue(nothing)
    ok, full = named(recorder.spans, "send ")
    assert ok.status.status_code is StatusCode.UNSET
    assert full.status.status_code is StatusCode.ERROR
    assert (full.attributes or {})["error.type"] == "aioqueue.errors.QueueFull"
    assert [e.name for e in full.events] == ["exception"]


class Seen(Middleware):
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.state: list[set[str]] = []

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        self.headers.append(dict(attempt.headers))
        self.state.append(set(attempt.state))


def test_with_no_op_providers_given_no_hook_is_called_at_all() -> None:
    from aioqueue._hooks import HOOK_NAMES, Hooks

    quiet = OpenTelemetryMiddleware(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
    )
    assert all(getattr(Hooks([quiet]), name) == () for name in HOOK_NAMES)
    # one provider that records keeps every hook
    measured = OpenTelemetryMiddleware(
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )
    hooks = Hooks([measured])
    assert hooks.before_attempt and hooks.after_attempt and hooks.on_settled
    assert hooks.before_enqueue and hooks.after_enqueue


async def test_with_no_op_providers_no_header_is_written_and_nothing_kept(
    redis_url: str, queue_name: str
) -> None:
    quiet = OpenTelemetryMiddleware(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
    )
    seen = Seen()
    worker = Worker([nothing], redis_url=redis_url, queues=[queue_name], middleware=[quiet, seen])
    async with Queue(redis_url, name=queue_name, middleware=[quiet]) as queue:
        job = await queue.enqueue(nothing)
        async with running(worker):
            await job.result(timeout=10)
    assert seen.headers == [{}]
    assert seen.state == [set()]
