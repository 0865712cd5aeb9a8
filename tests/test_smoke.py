from __future__ import annotations

import pytest

from aioqueue import Queue, Worker
from tests.conftest import running
from tests.tasks import add, multiply

pytestmark = pytest.mark.anyio


async def test_round_trip(queue: Queue, redis_url: str, queue_name: str) -> None:
    worker = Worker([add, multiply], redis_url=redis_url, queues=[queue_name])
    async with running(worker):
        job = await queue.enqueue(add, 1, 2)
        assert await job.result(timeout=5) == 3
        job2 = await queue.enqueue(multiply, 3, 4)
        assert await job2 == 12
