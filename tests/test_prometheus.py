"""aioqueue.prometheus in one process: the middleware's counting, the queue gauges read
from a real Redis at scrape time, the ASGI app of a web app's own /metrics, and
``aioqueue run --processes 0 --metrics-port``. The supervised form is
tests/test_prometheus_supervised.py."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aioqueue import Queue, Worker
from aioqueue._prometheus import batched
from aioqueue.admin import Admin
from aioqueue.middleware import Attempt, AttemptResult, Enqueue, Message, WorkerInfo
from aioqueue.prometheus import OUTCOMES, PrometheusMiddleware, QueueCollector, metrics_app
from aioqueue.task import task_ref
from tests import tasks
from tests.prom_helpers import assert_no_job_ids, by, parse, value

pytestmark = pytest.mark.anyio


def _attempt(task: str, *, wait: float | None = 0.25, job_id: str = "j1") -> Attempt:
    return Attempt(
        job_id=job_id,
        queue="q",
        task=task,
        attempt=1,
        lost=0,
        worker_id="w",
        headers={},
        wait=wait,
        state={},
        started=time.perf_counter(),
    )


def _result(outcome: str, duration: float = 0.5) -> AttemptResult:
    return AttemptResult(outcome, None, None, duration, None, None)


def test_each_outcome_is_counted_once_and_released_or_lost_attempts_are_not() -> None:
    registry = CollectorRegistry()
    mw = PrometheusMiddleware(registry)
    info = WorkerInfo("w", ("q",), 10, ("t",))
    mw.on_worker_start(info)
    ends = [*OUTCOMES, "complete", "released", "lost"]
    for i, outcome in enumerate(ends):
        attempt = _attempt("t", job_id=f"job-{i}", wait=None if outcome == "lost" else 0.25)
        mw.before_attempt(attempt)
        if i == 0:
            samples = parse(generate_latest(registry).decode())
            assert value(samples, "aioqueue_worker_busy_slots") == 1
        mw.after_attempt(attempt, _result(outcome))
    mw.before_attempt(_attempt("a.task.this.worker.lacks"))  # its name came from Redis
    samples = parse(generate_latest(registry).decode())
    finished = by(samples, "aioqueue_jobs_finished_total", "outcome", task="t")
    assert finished == {o: 2.0 if o == "complete" else 1.0 for o in OUTCOMES}
    assert value(samples, "aioqueue_jobs_started_total", task="t") == len(ends)
    assert value(samples, "aioqueue_jobs_started_total", task="(unknown)") == 1
    # a duration per finished attempt; a wait per start that knew it
    assert value(samples, "aioqueue_job_duration_seconds_count", task="t") == len(OUTCOMES) + 1
    assert value(samples, "aioqueue_job_duration_seconds_sum", task="t") == 0.5 * 7
    assert value(samples, "aioqueue_job_wait_seconds_count", task="t") == len(ends) - 1
    assert value(samples, "aioqueue_worker_busy_slots") == 1  # the unknown one runs
    assert value(samples, "aioqueue_worker_capacity") == 10
    mw.on_worker_stop(info)
    assert value(parse(generate_latest(registry).decode()), "aioqueue_worker_capacity") == 0
    assert_no_job_ids(samples, [f"job-{i}" for i in range(len(ends))])


def test_enqueues_and_failed_enqueues_are_counted_per_queue() -> None:
    registry = CollectorRegistry()
    mw = PrometheusMiddleware(registry)
    batch = Enqueue(
        [Message("q", "t", f"id{i}", {}, 0.0) for i in range(3)], True, time.perf_counter()
    )
    mw.after_enqueue(batch, None)
    mw.after_enqueue(Enqueue([Message("q", "u", "x", {}, 0.0)], False, time.perf_counter()), None)
    failed = Enqueue([Message("q", "t", "y", {}, 0.0)], False, time.perf_counter())
    mw.after_enqueue(failed, ConnectionError("gone"))
    many_failed = Enqueue([Message("q", "t", f"z{i}", {}, 0.0) for i in range(2)], True, 0.0)
    mw.after_enqueue(many_failed, TimeoutError())
    samples = parse(generate_latest(registry).decode())
    assert by(samples, "aioqueue_jobs_enqueued_total", "task") == {"t": 3, "u": 1}
    # an error once per call, whatever it held
    errors = by(samples, "aioqueue_enqueue_errors_total", "error")
    assert errors == {"ConnectionError": 1, "TimeoutError": 1}
    assert value(samples, "aioqueue_enqueue_duration_seconds_count", queue="q") == 4


def _counted(
    monkeypatch: pytest.MonkeyPatch, batch: Callable[[PrometheusMiddleware], batched.Batch]
) -> tuple[CollectorRegistry, PrometheusMiddleware, list[int]]:
    """A middleware whose ``batch`` counts its hand-overs (one item each in the list);
    no timer fires meanwhile."""
    monkeypatch.setattr(batched, "FLUSH_EVERY", 3600.0)
    registry = CollectorRegistry()
    mw = PrometheusMiddleware(registry)
    chosen, flushes = batch(mw), []
    flush = chosen.flush
    monkeypatch.setattr(chosen, "flush", lambda: (flushes.append(1), flush())[1])
    return registry, mw, flushes


async def test_a_workers_counts_are_handed_over_in_batches_and_a_scrape_reads_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, mw, flushes = _counted(monkeypatch, lambda mw: mw._pending)
    for i in range(100):  # a hundred event-loop passes of one no-op job each
        attempt = _attempt("t", job_id=f"j{i}")
        mw.before_attempt(attempt)
        mw.after_attempt(attempt, _result("complete" if i % 4 else "retried"))
        await anyio.sleep(0)
    # the first pass after a quiet spell handed over; the other 99 wait for the timer
    assert len(flushes) == 1
    started = mw._m.started.labels("q", "t")._value.get()  # the metric itself, no scrape
    assert started == 1
    samples = parse(generate_latest(registry).decode())  # a scrape hands over first
    assert len(flushes) == 2
    assert by(samples, "aioqueue_jobs_finished_total", "outcome") == {"complete": 75, "retried": 25}
    assert value(samples, "aioqueue_jobs_started_total", task="t") == 100
    assert value(samples, "aioqueue_job_wait_seconds_count", task="t") == 100
    assert value(samples, "aioqueue_worker_busy_slots") == 0


async def test_a_producers_counts_are_handed_over_in_batches_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, mw, flushes = _counted(monkeypatch, lambda mw: mw._sent)
    for i in range(100):  # a hundred awaited enqueues, one per event-loop pass
        call = Enqueue([Message("q", "t", f"id{i}", {}, 0.0)], False, time.perf_counter())
        mw.after_enqueue(call, ConnectionError("gone") if i % 10 == 0 else None)
        await anyio.sleep(0)
    assert len(flushes) == 1  # the first, after a quiet spell; the rest wait for the timer
    assert mw._m.enqueued.labels("q", "t")._value.get() == 0  # the first one failed
    samples = parse(generate_latest(registry).decode())  # a scrape hands over first
    assert len(flushes) == 2
    assert value(samples, "aioqueue_jobs_enqueued_total", task="t") == 90
    assert by(samples, "aioqueue_enqueue_errors_total", "error") == {"ConnectionError": 10}
    assert value(samples, "aioqueue_enqueue_duration_seconds_count", queue="q") == 100


async def test_the_queue_gauges_of_one_scrape_match_redis(redis_url: str, queue_name: str) -> None:
    async with Queue(redis_url, name=queue_name) as queue:
        # two dead jobs (a task no worker has, dead-lettered by a burst worker)
        await queue.enqueue_many([task_ref("tests.nobody.has.this").call() for _ in range(2)])
        worker = Worker([tasks.add], redis_url=redis_url, queues=[queue_name], burst=True)
        await worker.run()
        jobs = await queue.enqueue_many([tasks.add.call(i, i) for i in range(5)])
        await queue.enqueue_many([tasks.add.options(delay=3600).call(1, 1) for _ in range(3)])
    async with Admin(redis_url) as admin:
        claimed = await admin.scripts.claim(queue_name, 2, "a-worker", 60_000)
        assert len(claimed.jobs) == 2  # two active, three still queued
        oldest = (await admin.redis.lindex(f"aq:{{{queue_name}}}:ready", -1)).decode()
        assert oldest in {j.id for j in jobs}
        # the oldest ready job was enqueued a minute ago
        now = await admin.now_ms()
        await admin.redis.hset(f"aq:{{{queue_name}}}:j:{oldest}", "q", now - 60_000)
        info = await admin.queue(queue_name)
    collector = QueueCollector(redis_url, [queue_name])
    try:
        samples = await anyio.to_thread.run_sync(lambda: parse(_exposition(collector)))
    finally:
        collector.close()
    depths = by(samples, "aioqueue_queue_jobs", "state", queue=queue_name)
    assert depths == {"queued": 3, "scheduled": 3, "active": 2, "failed": 2}
    assert (info.queued, info.scheduled, info.active, info.failed) == (3, 3, 2, 2)
    latency = value(samples, "aioqueue_queue_latency_seconds", queue=queue_name)
    assert 60 <= latency < 120
    assert value(samples, "aioqueue_lease_reclaims_total", queue=queue_name) == 0
    assert value(samples, "aioqueue_redis_up") == 1


def _exposition(collector: QueueCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_an_unreachable_redis_reads_as_redis_up_0_and_no_queue_gauges() -> None:
    port = _closed_port()
    collector = QueueCollector(f"redis://127.0.0.1:{port}/0", ["q"], timeout=2.0)
    try:
        samples = parse(_exposition(collector))
    finally:
        collector.close()
    assert value(samples, "aioqueue_redis_up") == 0
    assert {s.name for s in samples} == {"aioqueue_redis_up"}


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_producer_metrics_on_a_web_apps_own_metrics_path(
    redis_url: str, queue_name: str
) -> None:
    registry = CollectorRegistry()
    async with Queue(redis_url, name=queue_name, middleware=[PrometheusMiddleware(registry)]) as q:

        async def enqueue(request: Request) -> JSONResponse:
            n = int(request.query_params["n"])
            if n == 1:
                job = await q.enqueue(tasks.add, 1, 2)
                return JSONResponse([job.id])
            return JSONResponse(
                [j.id for j in await q.enqueue_many(tasks.echo.call(i) for i in range(n))]
            )

        app = Starlette(
            routes=[
                Route("/enqueue", enqueue, methods=["POST"]),
                Mount("/metrics", metrics_app(registry)),
            ]
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            ids: list[str] = []
            for n in (1, 1, 4):
                ids += (await client.post("/enqueue", params={"n": n})).json()
            reply = await client.get("/metrics/")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = parse(reply.text)
    assert by(samples, "aioqueue_jobs_enqueued_total", "task", queue=queue_name) == {
        tasks.add.name: 2,
        tasks.echo.name: 4,
    }
    assert value(samples, "aioqueue_enqueue_duration_seconds_count", queue=queue_name) == 3
    assert_no_job_ids(samples, ids)
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.llen(f"aq:{{{queue_name}}}:ready") == 6  # what was counted was enqueued
    finally:
        r.close()
