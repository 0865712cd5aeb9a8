"""Fair dispatch with real worker processes: CPU-bound jobs spread as they arrive.

The jobs (``tasks.rendezvous``, plain ``def``: CPU-bound by default) pair up:
the first of each pair to start waits until the second has started. A process
that held two of them while able to run one would keep its partner waiting,
so with fair dispatch each pair must run on two processes, at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis

from aioqueue import Queue
from tests import tasks
from tests.supervised import Factory, Supervised, enqueue, results


@pytest.fixture
def supervise(redis_url: str, queue_name: str) -> Iterator[Factory]:
    started: list[Supervised] = []

    def start(*args: str, **kwargs: Any) -> Supervised:
        sup = Supervised(args, redis_url=redis_url, queue=queue_name, **kwargs)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()


def run_burst(sup: Supervised, redis_url: str, queue_name: str, n: int) -> list[dict[str, Any]]:
    sup.wait_for("supervisor.child_ready", count=2)
    prefix = f"{queue_name}:rv"
    calls = [tasks.rendezvous.call(redis_url, prefix) for _ in range(n)]
    ids = enqueue(redis_url, queue_name, calls)  # in one call: the burst arrives at once
    runs: list[dict[str, Any]] = results(redis_url, queue_name, ids, timeout=60)
    client = redis.Redis.from_url(redis_url)
    try:
        assert len(client.lrange(f"{prefix}:runs", 0, -1)) == n
    finally:
        client.close()
    return sorted(runs, key=lambda r: r["k"])


def assert_pairs_overlap_on_two_processes(runs: list[dict[str, Any]]) -> None:
    assert all(r["met"] for r in runs), runs  # nobody waited for a partner in vain
    for first, second in zip(runs[::2], runs[1::2], strict=True):
        assert first["pid"] != second["pid"], runs
        # both started before either ended: they ran at the same time
        assert max(first["start"], second["start"]) < min(first["end"], second["end"]), runs


def test_four_cpu_jobs_on_two_processes_run_two_per_process_at_once(
    supervise: Factory, redis_url: str, queue_name: str
) -> None:
    sup = supervise("--processes", "2")
    runs = run_burst(sup, redis_url, queue_name, 4)
    assert sorted(Counter(r["pid"] for r in runs).values()) == [2, 2], runs
    assert {r["pid"] for r in runs} == set(sup.ready_pids())
    assert_pairs_overlap_on_two_processes(runs)


def test_two_cpu_jobs_on_two_processes_run_one_per_process_at_once(
    supervise: Factory, redis_url: str, queue_name: str
) -> None:
    sup = supervise("--processes", "2")
    runs = run_burst(sup, redis_url, queue_name, 2)
    assert {r["pid"] for r in runs} == set(sup.ready_pids())
    assert_pairs_overlap_on_two_processes(runs)


@pytest.mark.anyio
async def test_run_with_concurrency_1_claims_one_delivery_at_a_time(
    redis_url: str, queue_name: str, spawn_worker: Any
) -> None:
    client = aioredis.from_url(redis_url, socket_timeout=None)
    sizes: list[int] = []
    try:
        async with client.monitor() as monitor, Queue(redis_url, name=queue_name) as queue:
            proc = spawn_worker("--concurrency", "1")

            async def watch() -> None:
                async for entry in monitor.listen():
                    words = entry["command"].split(" ")
                    # FCALL <fn> 1 <queue prefix> <events cap> n worker lease ...: what it asked for
                    claim = len(words) > 4 and words[0].upper() == "FCALL"
                    if claim and entry["client_type"] != "lua" and words[1].endswith("_claim"):
                        sizes.append(int(words[5]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                jobs = await queue.enqueue_many(tasks.add.call(i, i) for i in range(20))
                assert [await job.result(timeout=30) for job in jobs] == [2 * i for i in range(20)]
                tg.cancel_scope.cancel()
            proc.terminate()
            assert proc.wait(timeout=20) == 0
    finally:
        await client.aclose()
    assert set(sizes) == {1}, sizes  # before: 101 (concurrency 1 + the prefetch of 100)
    assert len(sizes) >= 20, sizes
