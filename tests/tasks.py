"""Tasks used by the tests (importable by worker processes too)."""

from __future__ import annotations

import os
import time

import anyio

from aioqueue import Retry, current_job, task


@task
async def add(a: int, b: int) -> int:
    return a + b


@task
def multiply(a: int, b: int) -> int:
    return a * b


@task
async def echo(value: object) -> object:
    return value


@task(max_attempts=1)
async def boom(message: str) -> None:
    raise ValueError(message)


@task(max_attempts=3, backoff=0.01, backoff_max=0.05)
async def flaky(fail_times: int) -> int:
    attempt = current_job().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@task(max_attempts=2)
async def asks_retry() -> int:
    if current_job().attempt == 1:
        raise Retry(defer=0.05)
    return current_job().attempt


@task(max_attempts=1)
async def sleepy(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "slept"


@task(max_attempts=1)
async def exits() -> None:
    raise SystemExit(3)


@task
async def whoami() -> dict[str, object]:
    ctx = current_job()
    return {
        "id": ctx.job_id,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "pid": os.getpid(),
        "worker": ctx.worker_id,
    }


@task
def blocking_sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@task(max_attempts=1)
async def signal_and_sleep(url: str, key: str, seconds: float) -> int:
    """Pushes (pid, attempt) to ``key`` when it starts, so a test can wait for the start."""
    import redis.asyncio as aioredis

    ctx = current_job()
    client = aioredis.from_url(url)
    try:
        await client.rpush(key, f"{os.getpid()}:{ctx.attempt}")
    finally:
        await client.aclose()
    await anyio.sleep(seconds)
    return os.getpid()


@task
async def returns_object() -> object:
    return object()
