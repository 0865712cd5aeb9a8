"""The worker of the metrics tests (``aioqueue run tests.metrics_app:worker --metrics-port``):
a task for each outcome, and one that holds its slot until the test lets it go."""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from aioqueue import Worker, current_job, task


@task
async def ok() -> None:
    return None


@task(max_attempts=3, backoff=0.001, backoff_max=0.002)
async def flaky() -> int:
    """Fails its first attempt, then succeeds."""
    attempt = current_job().attempt
    if attempt == 1:
        raise RuntimeError("the first attempt fails")
    return attempt


@task(max_attempts=3, backoff=0.001, backoff_max=0.002)
async def always_fails() -> None:
    raise RuntimeError("every attempt fails")


@task(max_attempts=1, timeout=0.05)
async def too_slow() -> None:
    await anyio.sleep(3600)


@task
async def hold(url: str, started: str, gate: str) -> int:
    """Pushes this process's pid to ``started``, then waits for a token on ``gate``."""
    client = aioredis.from_url(url)
    try:
        await client.rpush(started, os.getpid())
        await client.blpop([gate], timeout=0)
    finally:
        await client.aclose()
    return os.getpid()


worker = Worker(
    [ok, flaky, always_fails, too_slow, hold],
    redis_url=os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0"),
    queues=[os.environ.get("TEST_QUEUE", "default")],
)
