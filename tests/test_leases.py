"""Leases, heartbeats and delivery tokens, driven through the Functions directly."""

from __future__ import annotations

import anyio
import pytest

from aioqueue import JobStatus, Queue, Worker
from aioqueue._protocol.keys import QueueKeys
from aioqueue._worker.executor import Outcome
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio


async def test_a_stale_delivery_can_not_complete_a_redelivered_job(
    queue: Queue, queue_name: str
) -> None:
    scripts = queue.scripts
    job = await queue.enqueue(tasks.add, 1, 2)
    (first,) = (await scripts.claim(queue_name, 10, "worker-a", lease_ms=1)).jobs
    await queue.redis.blpop(["never"], timeout=0.05)  # let the 1 ms lease lapse
    (second,) = (await scripts.claim(queue_name, 10, "worker-b", lease_ms=30_000)).jobs
    assert second.id == first.id == job.id
    assert second.token != first.token
    assert (second.attempt, second.lost) == (2, 1)

    stale = Outcome("complete", b"\x01", 60_000)
    fresh = Outcome("complete", b"\x03", 60_000)
    assert await scripts.finish(queue_name, [stale.wire(first)]) == [0]
    assert await scripts.heartbeat(
        queue_name, "worker-a", 30_000, b"{}", 60_000, [(first.id, first.token)]
    ) == [(first.token, "lost")]
    assert await scripts.finish(queue_name, [fresh.wire(second)]) == [1]
    assert await job.result(timeout=1) == 3  # exactly one outcome: the current delivery's
    stats = await queue.redis.hgetall(QueueKeys(queue_name).stats)
    assert stats[b"stale"] == b"1"


async def test_heartbeats_keep_a_long_job_from_being_redelivered(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    worker = Worker(
        [tasks.sleepy], redis_url=redis_url, queues=[queue_name], lease=0.5, heartbeat=0.1
    )
    async with running(worker):
        job = await queue.enqueue(tasks.sleepy, 1.5)  # three leases long
        assert await job.result(timeout=10) == "slept"
    info = await job.info()
    assert info.attempts == 1
    assert info.status is JobStatus.COMPLETE
    assert b"reaped" not in await queue.redis.hgetall(QueueKeys(queue_name).stats)


async def test_lost_lease_stops_the_job_in_the_stale_worker(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:started"
    worker = Worker(
        [tasks.signal_and_sleep], redis_url=redis_url, queues=[queue_name], heartbeat=0.05
    )
    async with running(worker):
        job = await queue.enqueue(tasks.signal_and_sleep, redis_url, key, 60)
        client = __import__("redis.asyncio", fromlist=["from_url"]).from_url(
            redis_url, socket_timeout=None
        )
        try:
            await client.blpop([key], timeout=10)
        finally:
            await client.aclose()
        # someone else took the delivery (as a reaper would after an expired lease)
        claimed = (await queue.scripts.claim(queue_name, 1, "thief", 30_000)).jobs
        assert claimed == []  # it is active, not claimable...
        await queue.redis.hset(QueueKeys(queue_name).job(job.id), "k", "other-token")
        with anyio.fail_after(10):
            while job.id in {r.job.id for r in worker._run.deliveries}:
                await anyio.sleep(0.01)  # the heartbeat sees the token change and stops the job
    assert await job.status() is JobStatus.ACTIVE  # its outcome was not written: not ours anymore
