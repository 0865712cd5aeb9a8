"""Burst mode: the worker drains its queues, then returns by itself."""

from __future__ import annotations

import anyio
import pytest

from aioqueue import JobStatus, Queue, Worker
from tests import tasks

pytestmark = pytest.mark.anyio


async def test_burst_worker_drains_then_returns(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    jobs = await queue.enqueue_many(tasks.add.call(i, i) for i in range(50))
    slow = await queue.enqueue(tasks.sleepy, 0.3)  # still running when the queue is empty
    later = await queue.enqueue(tasks.add.options(delay=60), 1, 1)
    worker = Worker([tasks.add, tasks.sleepy], redis_url=redis_url, queues=[queue_name], burst=True)
    with anyio.fail_after(10):
        await worker.run()
    assert [await j.result(timeout=1) for j in jobs] == [2 * i for i in range(50)]
    assert await slow.status() is JobStatus.COMPLETE  # waited for, not handed back
    assert await later.status() is JobStatus.SCHEDULED  # left for a later run
    assert worker.jobs_done == 51


async def test_burst_worker_on_an_empty_queue_returns_at_once(
    redis_url: str, queue_name: str
) -> None:
    worker = Worker([tasks.add], redis_url=redis_url, queues=[queue_name], burst=True)
    with anyio.fail_after(5):
        await worker.run()
    assert worker.jobs_done == 0
