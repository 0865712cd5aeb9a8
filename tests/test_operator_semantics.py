"""Operator actions and lost workers do what the docs say: retry is "as if new",
max_lost counts losses exactly, and an aborted job never starts again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import JobAborted, JobFailed, JobStatus, Queue, Worker, current_job, task
from aioqueue._protocol.keys import QueueKeys
from aioqueue.admin import Admin
from tests.conftest import ROOT
from tests.lost_app import dies

pytestmark = pytest.mark.anyio


@task(max_lost=1, max_attempts=1)
async def counted(url: str, key: str) -> int:
    """Records each run (its attempt number) in ``key``."""
    client = aioredis.from_url(url)
    try:
        await client.rpush(key, current_job().attempt)
    finally:
        await client.aclose()
    return current_job().attempt


async def drain(redis_url: str, queue_name: str) -> None:
    await Worker([counted], redis_url=redis_url, queues=[queue_name], burst=True).run()


async def lose_delivery(queue: Queue, queue_name: str, lease_ms: int = 0) -> None:
    """A worker claims everything ready and dies: its leases (by default lapsed at once)
    are never renewed."""
    assert (await queue.scripts.claim(queue_name, 100, "dies-at-once", lease_ms)).jobs


async def runs(queue: Queue, key: str) -> list[bytes]:
    return await queue.redis.lrange(key, 0, -1)


async def test_retry_of_a_job_dead_lettered_as_worker_lost_runs_it_as_if_new(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:runs"
    job = await queue.enqueue(counted, redis_url, key)
    await lose_delivery(queue, queue_name)
    await lose_delivery(queue, queue_name)  # reaps the first lapsed lease, loses it again
    await drain(redis_url, queue_name)
    with pytest.raises(JobFailed) as caught:
        await job.result(timeout=5)
    assert caught.value.exc_type == "aioqueue.errors.WorkerLost"
    assert await runs(queue, key) == []  # lost twice, never ran to an end

    async with Admin(redis_url) as admin:  # what `aioqueue jobs retry` calls
        assert await admin.requeue(queue_name, [job.id]) == 1
    await drain(redis_url, queue_name)
    assert await job.result(timeout=5) == 1  # its first attempt: nothing carried over
    assert await runs(queue, key) == [b"1"]
    fields = await queue.redis.hgetall(QueueKeys(queue_name).job(job.id))
    assert b"l" not in fields
    assert fields[b"a"] == b"1"


async def test_max_lost_is_the_number_of_runs_a_job_may_lose_its_worker(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    """Real deaths under the real supervisor: the task kills its worker process each run."""
    key = f"{queue_name}:runs"
    env = {
        **os.environ,
        "AIOQUEUE_REDIS_URL": redis_url,
        "TEST_QUEUE": queue_name,
        "TEST_LEASE": "1",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "aioqueue", "run", "tests.lost_app:worker"]
    supervisor = subprocess.Popen(
        [*command, "--processes", "1", "--restart-backoff", "0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        job = await queue.enqueue(dies, redis_url, key)
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=60)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=30)
    assert caught.value.exc_type == "aioqueue.errors.WorkerLost"
    assert dies.max_lost == 2
    assert len(await runs(queue, key)) == 2  # two runs lost their worker, then dead-lettered
    assert "lost 2 times" in caught.value.exc_message


async def test_abort_of_a_job_whose_worker_died_ends_it_without_another_run(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:runs"
    job = await queue.enqueue(counted, redis_url, key)
    await lose_delivery(queue, queue_name, lease_ms=300)
    assert await job.status() is JobStatus.ACTIVE
    assert await job.abort()  # its worker is gone: nobody hears the abort channel
    async with anyio.create_task_group() as tg:
        worker = Worker([counted], redis_url=redis_url, queues=[queue_name])
        await tg.start(worker.run)
        with pytest.raises(JobAborted):
            await job.result(timeout=10)  # ended when its lease lapsed, not run again
        worker.stop()
    assert await runs(queue, key) == []
    assert await job.status() is JobStatus.ABORTED


@pytest.mark.parametrize("outcome", ["retry", "release"])
async def test_a_retry_or_hand_back_of_an_aborted_job_ends_it(
    queue: Queue, queue_name: str, outcome: str
) -> None:
    keys = QueueKeys(queue_name)
    job = await queue.enqueue(counted, "unused", "unused")
    (claimed,) = (await queue.scripts.claim(queue_name, 1, "w", 30_000)).jobs
    assert await job.abort()  # the worker missed the abort message
    done = await queue.scripts.finish(
        queue_name, [(claimed.id, claimed.token, outcome, b"", -1, 0)]
    )
    assert done == [1]
    assert await job.status() is JobStatus.ABORTED
    assert await queue.redis.llen(keys.ready) == 0
    assert await queue.redis.zcard(keys.sched) == 0
    with pytest.raises(JobAborted):
        await job.result(timeout=5)


async def test_a_job_aborted_while_queued_keeps_its_record_until_a_claim_drops_its_entry(
    redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    async with Queue(redis_url, name=queue_name, result_ttl=60) as queue:
        job = await queue.enqueue(counted, "unused", "unused")
        assert await job.abort()
        # its id is still in the ready list: an expiring record would leave an entry
        # that names no job
        assert await queue.redis.pttl(keys.job(job.id)) == -1
        await drain(redis_url, queue_name)
        assert 0 < await queue.redis.pttl(keys.job(job.id)) <= 60_000
        assert await queue.redis.zcard(keys.garbage) == 0
        assert await job.status() is JobStatus.ABORTED
