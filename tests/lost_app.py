"""A worker whose task kills its own process, run under the real supervisor by the tests
(``aioqueue run tests.lost_app:worker --processes 1``)."""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from aioqueue import Worker, task


@task(max_lost=2, max_attempts=1)
async def dies(url: str, key: str) -> None:
    """Records its run, then takes its worker process down, every time."""
    client = aioredis.from_url(url)
    try:
        await client.rpush(key, os.getpid())
    finally:
        await client.aclose()
    os._exit(17)


worker = Worker(
    [dies],
    redis_url=os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0"),
    queues=[os.environ.get("TEST_QUEUE", "default")],
    lease=float(os.environ.get("TEST_LEASE", "30")),
)
