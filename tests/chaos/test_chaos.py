"""The chaos suite: real worker processes, real kills, real outages. Nothing is lost.

Short forms run in `make test`; `make chaos` (AIOQUEUE_CHAOS=long) runs the long forms.
Every scenario ends with an audit: every job completed, duplicates within the
bound the design promises, nothing stuck in active or scheduled.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import Job, JobFailed, Queue
from aioqueue._protocol.functions import PROMOTE_LIMIT
from aioqueue._protocol.keys import QueueKeys
from aioqueue.errors import RedisUnavailable
from tests.chaos import jobs
from tests.chaos.harness import WorkerPool, audit, enqueue_records, scale, wait_all
from tests.chaos.proxy import ChaosProxy
from tests.conftest import running
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


async def test_sigkill_random_workers_while_jobs_run(
    tcp_redis: RedisServer, queue_name: str
) -> None:
    n = scale(2000, 10_000)
    run = secrets.token_hex(4)
    pool = WorkerPool(
        tcp_redis.url, queue_name, size=2, env={"TEST_LEASE": "1", "TEST_CONCURRENCY": "20"}
    )
    pool.start()
    kills = 0
    in_flight_at_kills = 0
    try:
        async with Queue(tcp_redis.url, name=queue_name) as queue:
            handles = await enqueue_records(queue, run, n, 0.05)
            finished = anyio.Event()

            async def killer() -> None:
                nonlocal kills, in_flight_at_kills
                low, high = (1.0, 3.0) if scale(0, 1) else (0.3, 0.8)
                while not finished.is_set():
                    with anyio.move_on_after(random.uniform(low, high)):  # the chaos schedule
                        await finished.wait()
                    if finished.is_set():
                        return
                    victim = random.choice(pool.alive())
                    in_flight_at_kills += await queue.redis.zcard(QueueKeys(queue_name).active)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    kills += 1
                    pool.respawn()

            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                await wait_all(handles, timeout=300)
                finished.set()
    finally:
        pool.stop()
    result = await audit(tcp_redis.url, run, queue_name)
    assert kills >= 1
    assert result.missing([j.id for j in handles]) == []
    assert result.duplicates() <= in_flight_at_kills
    assert (result.active, result.scheduled, result.ready) == (0, 0, 0)
    print(
        f"\nchaos sigkill: jobs={n} kills={kills} duplicates={result.duplicates()}"
        f" bound={in_flight_at_kills}"
    )


async def test_redis_restart_with_aof_loses_no_acknowledged_job(
    tcp_redis: RedisServer, queue_name: str
) -> None:
    n = scale(600, 5000)
    run = secrets.token_hex(4)
    pool = WorkerPool(tcp_redis.url, queue_name, size=2, env={"TEST_LEASE": "2"})
    pool.start()
    acknowledged: list[Job[int]] = []
    restarted = False
    try:
        async with Queue(tcp_redis.url, name=queue_name, timeout=2) as queue:
            i = 0
            while i < n:
                if i == n // 2 and not restarted:
                    tcp_redis.stop(signal.SIGKILL)  # a crash: only what was fsynced survives
                    tcp_redis.start()
                    restarted = True
                batch = [
                    jobs.record.options(job_id=f"{run}-{k}").call(run, 0.01)
                    for k in range(i, i + 20)
                ]
                try:
                    acknowledged += await queue.enqueue_many(batch)
                    i += 20
                except RedisUnavailable:
                    await anyio.sleep(0.05)  # the producer retries the same ids: deduplicated
            await wait_all(acknowledged, timeout=120)
    finally:
        pool.stop()
    result = await audit(tcp_redis.url, run, queue_name)
    assert restarted
    assert result.missing([j.id for j in acknowledged]) == []
    assert (result.active, result.scheduled, result.ready) == (0, 0, 0)
    print(
        f"\nchaos redis restart: acknowledged={len(acknowledged)} duplicates={result.duplicates()}"
    )


async def test_proxy_cuts_and_stalls_connections(tcp_redis: RedisServer, queue_name: str) -> None:
    n = scale(1500, 10_000)
    run = secrets.token_hex(4)
    proxy = ChaosProxy(tcp_redis.port)
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    env = {"TEST_LEASE": "3", "CHAOS_RECORD_URL": tcp_redis.url}
    pool = WorkerPool(url, queue_name, size=2, env=env)
    pool.start()
    in_flight_at_faults = 0
    try:
        async with Queue(tcp_redis.url, name=queue_name) as queue:  # the producer is not proxied
            handles = await enqueue_records(queue, run, n, 0.02)
            finished = anyio.Event()

            async def chaos() -> None:
                nonlocal in_flight_at_faults
                while not finished.is_set():
                    with anyio.move_on_after(random.uniform(0.2, 0.6)):
                        await finished.wait()
                    if finished.is_set():
                        return
                    in_flight_at_faults += await queue.redis.zcard(QueueKeys(queue_name).active)
                    if random.random() < 0.5:
                        proxy.cut()
                    else:
                        await proxy.stall(random.uniform(0.2, 1.0))

            async with anyio.create_task_group() as tg:
                tg.start_soon(chaos)
                await wait_all(handles, timeout=300)
                finished.set()
        assert all(p.poll() is None for p in pool.procs), "a worker died of a cut connection"
    finally:
        pool.stop()
        await proxy.close()
    result = await audit(tcp_redis.url, run, queue_name)
    assert proxy.cuts + proxy.stalls >= 1
    assert result.missing([j.id for j in handles]) == []
    assert result.duplicates() <= in_flight_at_faults
    assert (result.active, result.scheduled, result.ready) == (0, 0, 0)
    print(
        f"\nchaos proxy: cuts={proxy.cuts} stalls={proxy.stalls} duplicates={result.duplicates()}"
        f" bound={in_flight_at_faults}"
    )


async def test_poison_jobs_are_dead_lettered_and_the_pool_lives(
    tcp_redis: RedisServer, queue_name: str
) -> None:
    run = secrets.token_hex(4)
    pool = WorkerPool(tcp_redis.url, queue_name, size=1, env={"TEST_LEASE": "0.5"})
    pool.start()
    try:
        async with Queue(tcp_redis.url, name=queue_name) as queue:
            poison = [
                await queue.enqueue(jobs.dies),
                await queue.enqueue(jobs.raises),
                await queue.enqueue(jobs.hangs),
            ]
            good = await enqueue_records(queue, run, 50, 0)
            restarts = 0
            outcomes: list[str] = []

            async def watch_pool() -> None:
                nonlocal restarts
                while True:
                    proc = pool.procs[0]
                    await anyio.to_thread.run_sync(
                        proc.wait, abandon_on_cancel=True
                    )  # as a supervisor would
                    restarts += pool.respawn()

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_pool)
                for job in poison:
                    with pytest.raises(JobFailed) as caught:
                        await job.result(timeout=60)
                    outcomes.append(caught.value.exc_type)
                await wait_all(good, timeout=60)
                tg.cancel_scope.cancel()
    finally:
        pool.stop()
    assert outcomes == [
        "aioqueue.errors.WorkerLost",
        "builtins.RuntimeError",
        "builtins.TimeoutError",
    ]
    # the dying job killed its worker once (max_lost=1), then was dead-lettered
    assert restarts == 1
    result = await audit(tcp_redis.url, run, queue_name)
    assert result.dead == {j.id for j in poison}
    assert result.missing([j.id for j in good]) == []


async def test_stale_worker_with_a_blocked_loop_can_not_ack(
    tcp_redis: RedisServer, queue_name: str
) -> None:
    run = secrets.token_hex(4)
    stale = WorkerPool(tcp_redis.url, queue_name, size=1, env={"TEST_LEASE": "0.5"})
    stale.start()
    try:
        async with Queue(tcp_redis.url, name=queue_name) as queue:
            job = await queue.enqueue(jobs.blocks_loop, run, 2.0)
            client = aioredis.from_url(tcp_redis.url)
            try:
                while not await client.hexists(f"chaos:{run}:started", job.id):
                    await anyio.sleep(0.01)
                # the first worker's loop is blocked for 4 leases: another takes the job
                async with running(jobs.in_process_worker(tcp_redis.url, queue_name, lease=5)):
                    assert await job.result(timeout=30) == os.getpid()
                    # the stale worker wakes, runs to its end, and its finish is refused
                    while int(await client.hget(f"chaos:{run}:finished", job.id) or 0) < 2:
                        await anyio.sleep(0.01)
                    with anyio.fail_after(10):
                        while not await client.hget(QueueKeys(queue_name).stats, "stale"):
                            await anyio.sleep(0.01)
                    assert await job.result(timeout=1) == os.getpid()  # still the fresh one's
            finally:
                await client.aclose()
    finally:
        stale.stop()
    result = await audit(tcp_redis.url, run, queue_name)
    assert result.finished[job.id] == 2  # the duplicate execution is recorded


async def test_redis_down_then_back_workers_resume_quietly(
    tcp_redis: RedisServer, queue_name: str
) -> None:
    down_for = scale(4, 60)
    pool = WorkerPool(tcp_redis.url, queue_name, size=1)
    pool.start()
    proc = pool.procs[0]
    try:
        async with Queue(tcp_redis.url, name=queue_name) as queue:
            run = secrets.token_hex(4)
            assert await (await queue.enqueue(jobs.record, run, 0)).result(timeout=20) == proc.pid
            cpu_before = cpu_seconds(proc.pid)
            tcp_redis.stop(signal.SIGKILL)
            await anyio.sleep(down_for)  # the outage itself
            cpu_down = cpu_seconds(proc.pid) - cpu_before
            tcp_redis.start()
            back = time.monotonic()
            job = await retrying_enqueue(queue, run)
            assert await job.result(timeout=30) == proc.pid
            resumed_in = time.monotonic() - back
    finally:
        proc.kill()
        proc.wait()
        stderr = pool.log_of(proc)
        pool.stop()
    lines = len(stderr.splitlines())
    assert cpu_down < 0.1 * down_for, f"worker used {cpu_down:.2f}s CPU in a {down_for}s outage"
    assert lines < 10 * down_for, f"{lines} log lines in a {down_for}s outage"
    assert resumed_in < 5.0
    print(
        f"\nchaos redis down {down_for}s: cpu={cpu_down:.3f}s log_lines={lines}"
        f" resumed_in={resumed_in:.2f}s"
    )


async def retrying_enqueue(queue: Queue, run: str) -> Job[int]:
    while True:
        try:
            return await queue.enqueue(jobs.record, run, 0)
        except RedisUnavailable:
            await anyio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_many_delayed_jobs_due_at_once_are_promoted_in_bounded_batches(
    redis_url: str, queue_name: str
) -> None:
    """Structure, not time (how long a call takes is for benchmarks/promote_burst.py):
    each call moves at most PROMOTE_LIMIT due jobs, and the burst runs beside new work."""
    n = scale(50_000, 1_000_000)
    due = datetime.now(UTC) + timedelta(seconds=1)
    async with Queue(redis_url, name=queue_name) as queue:
        for _start in range(0, n, 2000):
            await queue.enqueue_many(
                jobs.noop.options(at=due, result_ttl=0).call() for _ in range(2000)
            )
        await anyio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        # the burst is due: a claim of no jobs only promotes, and says how many it moved
        keys = QueueKeys(queue_name)
        for _ in range(3):
            # (on a slow machine the last batches were due before they were enqueued)
            ready, scheduled = (
                await queue.redis.llen(keys.ready),
                await queue.redis.zcard(keys.sched),
            )
            assert scheduled > PROMOTE_LIMIT
            reply = await queue.scripts.claim(queue_name, 0, "observer", 1000)
            assert (reply.promoted, reply.jobs) == (PROMOTE_LIMIT, [])
            assert await queue.redis.llen(keys.ready) == ready + PROMOTE_LIMIT
            assert await queue.redis.zcard(keys.sched) == scheduled - PROMOTE_LIMIT
        worker = jobs.in_process_worker(redis_url, queue_name, concurrency=50)
        async with running(worker):
            # the rest is promoted and run while new work keeps flowing
            run = secrets.token_hex(4)
            fresh = await queue.enqueue(jobs.record, run, 0)
            assert await fresh.result(timeout=60) > 0
            while int(await queue.redis.hget(keys.stats, "complete") or 0) < n + 1:
                await anyio.sleep(0.05)
        assert await queue.redis.zcard(keys.sched) == 0


async def test_clock_skew_on_the_worker_does_not_move_delayed_jobs(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 600)  # this host is ten minutes ahead
    run = secrets.token_hex(4)
    async with Queue(redis_url, name=queue_name) as queue:
        job = await queue.enqueue(jobs.record.options(delay=0.5), run, 0)
        server_enqueued = await redis_time(queue)
        async with running(jobs.in_process_worker(redis_url, queue_name)):
            await job.result(timeout=10)
        info = await job.info()
    assert info.started_at is not None
    late = info.started_at.timestamp() - server_enqueued - 0.5
    assert -0.01 <= late < 1.0, f"started {late:+.3f}s from its due time"


async def redis_time(queue: Queue) -> float:
    seconds, micros = await queue.redis.time()
    return seconds + micros / 1e6
