"""``aioqueue run --metrics-port`` as real processes: the supervisor's /metrics sums every
child, the SIGKILLed one included, and a restart resets no counter.

Every wait is on an event: a log line, a Redis list a job pushes to, a job's result.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from aioqueue import Queue
from aioqueue.admin import Admin
from aioqueue.task import Call, task_ref
from tests import metrics_app as app
from tests.prom_helpers import assert_no_job_ids, by, scrape, scrape_until, value
from tests.supervised import Supervised, enqueue

C = 4  # concurrency of each child; --prefetch 0: a child holds at most C deliveries
MIX = {"ok": 300, "flaky": 75, "always_fails": 50, "too_slow": 25, "unknown": 50}  # per phase
UNKNOWN = "tests.metrics_app.nobody_has_this"
SERVE = ["--restart-backoff", "0", "--metrics-port", "0", "--metrics-host", "127.0.0.1"]


_ok, _flaky, _fails, _slow, _unknown = (2 * MIX[k] for k in MIX)  # both phases
FINISHED = {
    "complete": _ok + _flaky + 2 * C,
    "retried": _flaky + 2 * _fails,  # flaky fails once; always_fails twice before its last
    "failed": _fails,
    "timeout": _slow,
    "dead": _unknown,
}


def _finished(samples: list[Any], queue: str) -> float:
    return value(samples, "aioqueue_jobs_finished_total", queue=queue)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _calls() -> list[Call[Any]]:
    calls: list[Call[Any]] = []
    for name, n in MIX.items():
        make = task_ref(UNKNOWN).call if name == "unknown" else getattr(app, name).call
        calls += [make() for _ in range(n)]
    return calls


def _settle(redis_url: str, queue: str, ids: list[str]) -> list[Any]:
    """Every job's final result or error (awaited: results arrive by pub/sub)."""

    async def main() -> list[Any]:
        async with Queue(redis_url, name=queue) as q:
            out: list[Any] = [None] * len(ids)

            async def one(i: int) -> None:
                try:
                    out[i] = await q.job(ids[i]).result(timeout=60)
                except Exception as exc:
                    out[i] = exc

            async with anyio.create_task_group() as tg:
                for i in range(len(ids)):
                    tg.start_soon(one, i)
            return out

    return anyio.run(main)


def _depths(redis_url: str, queue: str) -> tuple[Any, ...]:
    async def main() -> tuple[Any, ...]:
        async with Admin(redis_url) as admin:
            info = await admin.queue(queue)
            return info.queued, info.scheduled, info.active, info.failed

    return anyio.run(main)


def test_supervised_metrics_sum_every_child_and_the_killed_one(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    sup = Supervised(
        ["--processes", "2", "--concurrency", str(C), "--prefetch", "0", "--lease", "2", *SERVE],
        redis_url=redis_url,
        queue=queue_name,
        target="tests.metrics_app:worker",
    )
    try:
        (serving,) = sup.wait_for("metrics.serving")
        port, directory = serving["port"], Path(serving["dir"])
        sup.wait_for("supervisor.child_ready", count=2)

        # phase 1: half the mix runs on both children, every outcome recorded
        first = enqueue(redis_url, queue_name, _calls())
        _settle(redis_url, queue_name, first)

        # both children fill their C slots with jobs that hold them
        started, gate = f"{queue_name}:started", f"{queue_name}:gate"
        holds = enqueue(
            redis_url, queue_name, [app.hold.call(redis_url, started, gate) for _ in range(2 * C)]
        )
        pids = [int(sync_redis.blpop([started], timeout=30)[1]) for _ in range(2 * C)]
        assert sorted(Counter(pids).values()) == [C, C]
        # phase 2 waits in the queue: no child has room for it
        second = enqueue(redis_url, queue_name, _calls())
        # the victim's starts of its holds are on /metrics (its files) before it dies
        scrape_until(
            port, lambda s: value(s, "aioqueue_jobs_started_total", task=app.hold.name) == 2 * C
        )

        victim = pids[0]
        os.kill(victim, signal.SIGKILL)  # C attempts started there will never finish
        sup.wait_for("supervisor.child_exited", pid=victim)
        # the survivor's C holds, the C reclaimed ones, and C spare (a token handed to a
        # dead client's BLPOP before Redis saw its socket close would be lost)
        sync_redis.rpush(gate, *["go"] * (3 * C))
        results = _settle(redis_url, queue_name, first + holds + second)
        sup.wait_for("supervisor.child_ready", count=3)  # the replacement runs
        # a child hands its counts to its files at most 20 ms after the jobs (batched)
        scrape_until(port, lambda s: _finished(s, queue_name) >= sum(FINISHED.values()))
        samples = scrape(port)
        depths = _depths(redis_url, queue_name)
    finally:
        sup.send(signal.SIGTERM)
        code = sup.wait()
        sup.close()
    assert code == 0
    assert not directory.exists()  # the private directory went with the supervisor

    hold_results = results[len(first) : len(first) + 2 * C]
    assert all(isinstance(r, int) for r in hold_results)
    q = {"queue": queue_name}
    finished = by(samples, "aioqueue_jobs_finished_total", "outcome", **q)
    ok, flaky, fails, slow, unknown = (2 * MIX[k] for k in MIX)
    assert finished == FINISHED
    started_by_task = by(samples, "aioqueue_jobs_started_total", "task", **q)
    assert started_by_task == {
        app.ok.name: ok,
        app.flaky.name: 2 * flaky,
        app.always_fails.name: 3 * fails,
        app.too_slow.name: slow,
        app.hold.name: 2 * C + C,  # the killed child's C started again elsewhere
        "(unknown)": unknown,
    }
    # the killed child's counters are still in the sums: C attempts started, never finished
    assert sum(started_by_task.values()) == sum(finished.values()) + C
    for task, n in by(samples, "aioqueue_jobs_finished_total", "task", **q).items():
        assert value(samples, "aioqueue_job_duration_seconds_count", task=task, **q) == n
    # live processes only: two children of C slots each, the dead one's gauges dropped
    assert value(samples, "aioqueue_worker_capacity") == 2 * C
    assert value(samples, "aioqueue_worker_busy_slots") == 0
    # the queue gauges (read once, by the supervisor) agree with Redis
    assert value(samples, "aioqueue_lease_reclaims_total", **q) == C
    gauges = by(samples, "aioqueue_queue_jobs", "state", **q)
    assert depths == (0, 0, 0, fails + slow + unknown)
    assert gauges == {"failed": fails + slow + unknown}
    assert value(samples, "aioqueue_queue_latency_seconds", **q) == 0
    assert value(samples, "aioqueue_redis_up") == 1
    assert_no_job_ids(samples, first + holds + second)


def test_one_process_serves_its_own_metrics_with_processes_0(
    redis_url: str, queue_name: str
) -> None:
    sup = Supervised(
        ["--processes", "0", "--concurrency", "7", "--metrics-port", "0"],
        redis_url=redis_url,
        queue=queue_name,
        target="tests.metrics_app:worker",
        env={"AIOQUEUE_METRICS_HOST": "127.0.0.1"},
    )
    try:
        (serving,) = sup.wait_for("metrics.serving")
        assert serving["dir"] is None and serving["host"] == "127.0.0.1"
        ids = enqueue(redis_url, queue_name, [app.ok.call() for _ in range(20)])
        ids += enqueue(redis_url, queue_name, [app.flaky.call() for _ in range(5)])
        _settle(redis_url, queue_name, ids)
        samples = scrape(serving["port"])
    finally:
        sup.send(signal.SIGTERM)
        code = sup.wait()
        sup.close()
    assert code == 0
    q = {"queue": queue_name}
    assert by(samples, "aioqueue_jobs_finished_total", "outcome", **q) == {
        "complete": 25,
        "retried": 5,
    }
    assert value(samples, "aioqueue_jobs_started_total", **q) == 30
    assert value(samples, "aioqueue_worker_capacity") == 7
    assert by(samples, "aioqueue_queue_jobs", "state", **q) == {}
    assert value(samples, "aioqueue_redis_up") == 1
    assert value(samples, "process_cpu_seconds_total") > 0  # this process's own registry
    assert_no_job_ids(samples, ids)
