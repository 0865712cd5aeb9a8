"""Prometheus metrics (``pip install 'aioqueue[prometheus]'``): a middleware for workers
and producers, the queue gauges read from Redis at scrape time, and an ASGI app.

    from aioqueue.prometheus import PrometheusMiddleware, metrics_app

    worker = Worker([...], middleware=[PrometheusMiddleware()])   # attempts
    queue = Queue(url, middleware=[PrometheusMiddleware()])        # enqueues
    app.mount("/metrics", metrics_app())                           # a web app's own /metrics

``aioqueue run TARGET --metrics-port 9100`` does all of it for a worker: the supervisor
serves ``/metrics``, summing every child it ran (prometheus_client's multiprocess mode),
and reads the queue gauges (``QueueCollector``) once per scrape, not once per process.
The names, types and labels are docs/reference/metrics.md; no label holds a job id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aioqueue._admin.stats import QueueGauges, gauges
from aioqueue._prometheus.asgi import default_registry, metrics_app
from aioqueue._prometheus.batched import Flusher, Pending, Sent, Series
from aioqueue.admin import Admin
from aioqueue.middleware import Attempt, AttemptResult, Enqueue, Middleware, WorkerInfo

__all__ = [
    "ENQUEUE_BUCKETS",
    "JOB_BUCKETS",
    "OUTCOMES",
    "UNKNOWN_TASK",
    "PrometheusMiddleware",
    "QueueCollector",
    "default_registry",
    "metrics_app",
]

OUTCOMES = ("complete", "retried", "failed", "timeout", "dead", "aborted")
"""The ``outcome`` label of ``aioqueue_jobs_finished``: an attempt handed back at
shutdown (released) or whose lease went to another worker (lost) did not finish."""

UNKNOWN_TASK = "(unknown)"
"""The ``task`` label of a job whose task the worker does not have: its name came from
Redis, not from code, so it is not made a label of its own (there could be any number)."""
# seconds: jobs from a no-op to an hour, enqueues from a loopback round trip to a stall
JOB_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)
"""Bucket bounds (seconds) of the job duration and wait histograms."""
ENQUEUE_BUCKETS: tuple[float, ...] = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5),
)
"""Bucket bounds (seconds) of the enqueue duration histogram."""
_SCRAPE_TIMEOUT = 5.0  # a scrape answers redis_up 0 rather than hang on a lost Redis
_T = TypeVar("_T")


class _Metrics:
    """The metric families of one registry (the worker's and the producer's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # first of the registry's collectors: a scrape hands the counts over, then reads
        self.flusher = Flusher()
        registry.register(self.flusher)
        job = ["queue", "task"]
        self.started = Counter("aioqueue_jobs_started", "Attempts started.", job, registry=registry)
        self.finished = Counter(
            "aioqueue_jobs_finished",
            "Attempts finished, by outcome.",
            [*job, "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "aioqueue_job_duration_seconds",
            "Run time of an attempt.",
            job,
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "aioqueue_job_wait_seconds",
            "From due (enqueue, the end of a delay or a retry's backoff) to start.",
            job,
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        # live processes only: a dead child's slots are neither busy nor there
        self.busy = Gauge(
            "aioqueue_worker_busy_slots",
            "Jobs running now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.capacity = Gauge(
            "aioqueue_worker_capacity",
            "Jobs that can run at once (concurrency).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.enqueued = Counter(
            "aioqueue_jobs_enqueued", "Jobs enqueued by this process.", job, registry=registry
        )
        self.enqueue_errors = Counter(
            "aioqueue_enqueue_errors",
            "Enqueue calls that failed, by error type.",
            ["queue", "error"],
            registry=registry,
        )
        self.enqueue_duration = Histogram(
            "aioqueue_enqueue_duration_seconds",
            "Time of an enqueue call.",
            ["queue"],
            buckets=ENQUEUE_BUCKETS,
            registry=registry,
        )


_made: dict[int, tuple[CollectorRegistry, _Metrics]] = {}
_made_lock = threading.Lock()


def _metrics_of(registry: CollectorRegistry) -> _Metrics:
    """One set per registry, however many middlewares count into it."""
    with _made_lock:
        found = _made.get(id(registry))
        if found is None or found[0] is not registry:
            found = _made[id(registry)] = (registry, _Metrics(registry))
        return found[1]


_OUTCOME_INDEX = {outcome: i for i, outcome in enumerate(OUTCOMES)}


class PrometheusMiddleware(Middleware):
    """Counts attempts (on a ``Worker``) and enqueues (on a ``Queue``) into ``registry``.

    Args:
        registry: where the metrics are registered; prometheus_client's default
            registry when None (what ``metrics_app()`` and ``aioqueue run
            --metrics-port`` serve).

    On a worker: ``aioqueue_jobs_started`` and the wait histogram at an attempt's
    start; ``aioqueue_jobs_finished`` (by outcome) and the duration histogram at its
    end; the busy slots while it runs and the capacity while the worker runs. On a
    queue: ``aioqueue_jobs_enqueued`` per job, ``aioqueue_enqueue_errors`` per failed
    call, the call's duration. A job of a task the worker does not have is
    labelled ``task="(unknown)"``: its name came from Redis, not from code.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._m = _metrics_of(REGISTRY if registry is None else registry)
        self._series: dict[tuple[str, str], Series] = {}
        self._tasks: set[str] | None = None  # None until a worker starts: any name
        # the job hooks' counts, handed over in batches (aioqueue._prometheus.batched)
        self._pending = Pending(self._of, _OUTCOME_INDEX, self._m.busy, self._series)
        self._items = self._pending.items
        self._m.flusher.add(self._pending)
        self._sent = Sent(self._m, ENQUEUE_BUCKETS)
        self._m.flusher.add(self._sent)

    # -- the worker -------------------------------------------------------------------

    def on_worker_start(self, worker: WorkerInfo) -> None:
        """Adds the worker's concurrency to the capacity; learns its task names."""
        self._tasks = (self._tasks or set()) | set(worker.tasks)
        self._m.capacity.inc(worker.concurrency)

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        """Takes the worker's concurrency off the capacity; hands over what is counted."""
        self._m.capacity.dec(worker.concurrency)
        self._pending.flush()

    def _of(self, queue: str, task: str) -> Series:
        series = self._series.get((queue, task))
        if series is not None:
            return series
        # names the worker lacks share one key: a dict of them would grow without bound
        label = task if self._tasks is None or task in self._tasks else UNKNOWN_TASK
        series = self._series.get((queue, label))
        if series is None:
            m = self._m
            series = Series(
                m.started.labels(queue, label),
                [m.finished.labels(queue, label, o) for o in OUTCOMES],
                m.duration.labels(queue, label),
                m.wait.labels(queue, label),
                JOB_BUCKETS,
            )
            self._series[queue, label] = series
        return series

    # The two hooks every job runs append and return; the counting is Pending.flush's.
    # They keep what it counts, not the Attempt and its result: those are freed as
    # the job ends, not held until the hand-over (up to a thousand jobs later).

    def before_attempt(self, attempt: Attempt) -> None:
        """Counts the start, a busy slot, and the wait when it is known."""
        self._items.append((attempt.queue, attempt.task, None, attempt.wait))
        if not self._pending.scheduled:
            self._pending.schedule()

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        """Frees the slot; counts the outcome and the duration of a finished attempt."""
        self._items.append((attempt.queue, attempt.task, result.outcome, result.duration))
        if not self._pending.scheduled:
            self._pending.schedule()

    # -- the producer -----------------------------------------------------------------

    def after_enqueue(self, enqueue: Enqueue, error: BaseException | None) -> None:
        """Counts the call's duration, then each job enqueued, or the error by its type
        (handed over in batches, as the attempts' counts)."""
        seconds = time.perf_counter() - enqueue.started
        messages, items = enqueue.messages, self._sent.items
        failed = None if error is None else type(error).__name__
        if enqueue.many or failed is not None:
            items.append((enqueue.queue, seconds, failed, None))
            if failed is None:
                items.extend((message.queue, None, None, message.task) for message in messages)
        else:
            items.append((messages[0].queue, seconds, None, messages[0].task))
        if not self._sent.scheduled:
            self._sent.schedule()


class QueueCollector(Collector):
    """The queue gauges, read from Redis once per scrape (register it in one process).

    Args:
        redis_url: the Redis, as for ``Queue``.
        queues: the queues to read.
        timeout: seconds a scrape may wait for Redis; then ``aioqueue_redis_up`` is 0.

    ``aioqueue_queue_jobs`` by state (as ``aioqueue info`` counts them),
    ``aioqueue_queue_latency_seconds`` (the oldest ready job's wait, 0 when none
    waits), ``aioqueue_lease_reclaims`` (leases of dead workers taken back, counted
    by the Functions) and ``aioqueue_redis_up``. The reads run on an event loop of
    the collector's own thread, so ``collect`` may be called from any thread;
    ``close()`` ends it.
    """

    def __init__(
        self, redis_url: str, queues: Sequence[str], *, timeout: float = _SCRAPE_TIMEOUT
    ) -> None:
        self.redis_url = redis_url
        self.queues = list(queues)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._admin: Admin | None = None

    def describe(self) -> list[Metric]:
        """The families, without reading Redis (a registry asks when it registers)."""
        return list(self._families(lambda: None).values())

    def collect(self) -> Iterable[Metric]:
        """Reads every queue once, within ``timeout``; only ``redis_up`` 0 when that fails."""
        try:
            read = self._call(self._read()).result(self.timeout)
        except Exception:  # unreachable, refused, timed out: the scrape still answers
            read = None
        families = self._families(lambda: read)
        if read is not None:
            _fill(families, read)
        return list(families.values())

    @staticmethod
    def _families(read: Callable[[], object]) -> dict[str, Any]:
        up = GaugeMetricFamily(
            "aioqueue_redis_up", "1 when the last scrape could read Redis.", labels=[]
        )
        up.add_metric([], 0.0 if read() is None else 1.0)
        return {
            "jobs": GaugeMetricFamily(
                "aioqueue_queue_jobs", "Jobs in a queue by state.", labels=["queue", "state"]
            ),
            "latency": GaugeMetricFamily(
                "aioqueue_queue_latency_seconds",
                "How long the oldest ready job has waited.",
                labels=["queue"],
            ),
            "reclaims": CounterMetricFamily(
                "aioqueue_lease_reclaims",
                "Leases of dead workers taken back by claims and heartbeats.",
                labels=["queue"],
            ),
            "up": up,
        }

    def _call(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="aioqueue-metrics", daemon=True
                )
                self._thread.start()
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _read(self) -> list[tuple[str, QueueGauges]]:
        if self._admin is None:
            self._admin = Admin(self.redis_url, timeout=self.timeout)
        admin = self._admin
        async with asyncio.timeout(self.timeout):
            now = await admin.now_ms()
            return [(queue, await gauges(admin, queue, now)) for queue in self.queues]

    def close(self) -> None:
        """Closes the connections and ends the collector's thread."""
        with self._lock:
            loop, thread, admin = self._loop, self._thread, self._admin
            self._loop = self._thread = self._admin = None
        if loop is None or thread is None:
            return
        if admin is not None:
            done = asyncio.run_coroutine_threadsafe(admin.__aexit__(None, None, None), loop)
            # closing a lost connection may fail: the thread ends all the same
            with contextlib.suppress(Exception):
                done.result(self.timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)
        loop.close()


def _fill(families: dict[str, Any], read: list[tuple[str, QueueGauges]]) -> None:
    """Adds one scrape's readings to the families of ``QueueCollector._families``."""
    for queue, g in read:
        for state, value in (
            ("queued", g.queued),
            ("scheduled", g.scheduled),
            ("active", g.active),
            ("failed", g.failed),
        ):
            if value is not None:  # a key holding garbage: that state is unknown
                families["jobs"].add_metric([queue, state], float(value))
        families["latency"].add_metric([queue], (g.latency_ms or 0) / 1000)
        if g.reclaimed is not None:
            families["reclaims"].add_metric([queue], float(g.reclaimed))
