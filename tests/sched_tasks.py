"""Tasks for the scheduling, lock and cron tests (importable by worker processes).

They talk to Redis through ``state["redis"]``, opened by ``redis_hooks`` when
the worker starts, and time themselves with Redis ``TIME`` (the clock every
due time is on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import redis.asyncio as aioredis

from aioqueue import current_job, task

Hook = Callable[[dict[str, Any]], Awaitable[None]]


def redis_hooks(url: str) -> tuple[Hook, Hook]:
    """on_startup / on_shutdown hooks giving tasks a Redis client in ``state``."""

    async def open_client(state: dict[str, Any]) -> None:
        state["redis"] = aioredis.from_url(url)

    async def close_client(state: dict[str, Any]) -> None:
        await state["redis"].aclose()

    return open_client, close_client


def _redis() -> aioredis.Redis:
    client: aioredis.Redis = current_job().state["redis"]
    return client


async def redis_ms(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds * 1000 + micros / 1000


@task(max_attempts=1)
async def stamp(key: str) -> None:
    """Counts its run under its job id and records when it started (Redis ms)."""
    client = _redis()
    started = await redis_ms(client)
    job_id = current_job().job_id
    async with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(f"{key}:runs", job_id, 1)
        pipe.hset(f"{key}:start", job_id, repr(started))
        pipe.rpush(f"{key}:done", job_id)
        await pipe.execute()


async def _critical(group: str, tag: str) -> None:
    """Records how many runs of ``group`` were inside at once, then leaves."""
    client = _redis()
    inside = await client.incr(f"{group}:inside")
    await client.rpush(f"{group}:seen", inside)
    await anyio.sleep(0.03)
    await client.decr(f"{group}:inside")
    await client.rpush(f"{group}:done", tag)


@task(unique_key=lambda group, tag: group)
async def exclusive(group: str, tag: str) -> None:
    await _critical(group, tag)


@task
async def shared(group: str, tag: str) -> None:
    await _critical(group, tag)


@task(unique=True, on_locked="drop", max_attempts=1)
async def solo(key: str) -> str:
    """Says it started, then holds its lock until the test pushes to ``key:go``."""
    client = _redis()
    await client.rpush(f"{key}:started", current_job().job_id)
    await client.blpop([f"{key}:go"], timeout=20)
    return current_job().job_id


@task(unique=True, max_attempts=1)
async def waits_its_turn(key: str) -> None:
    client = _redis()
    await client.rpush(f"{key}:order", f"{current_job().job_id} {await redis_ms(client)!r}")


@task(max_attempts=1)
async def slow_tick(key: str, seconds: float) -> None:
    """A cron job that outlives its period: records (start, end) in Redis ms."""
    client = _redis()
    start = await redis_ms(client)
    await anyio.sleep(seconds)
    end = await redis_ms(client)
    await client.rpush(f"{key}:spans", f"{start!r} {end!r}")
