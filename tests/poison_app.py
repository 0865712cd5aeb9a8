"""A worker with one task per kind of poison job, run by tests/test_poison.py as
``aioqueue run tests.poison_app:worker --processes 2``."""

from __future__ import annotations

import math
import os
import time
from datetime import timedelta

import anyio

from aioqueue import Retry, Worker, current_job, task


@task
async def noop(i: int) -> int:
    return i


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ fails")


@task(max_attempts=1)
async def surrogate_message() -> None:
    raise ValueError("no such file: \udcff\udcfe")


@task(max_attempts=1)
async def unprintable() -> None:
    raise Unprintable()


@task(max_attempts=1)
async def retry_timedelta() -> None:
    raise Retry(defer=timedelta(minutes=1))  # the last attempt: dead-lettered with it


@task(max_attempts=3)
async def retry_inf() -> None:
    raise Retry(defer=math.inf)


@task(max_attempts=1)
async def huge_message() -> None:
    raise ValueError("m" * (10 << 20))


@task(max_attempts=1, timeout=0.5)
async def hangs() -> None:
    await anyio.sleep(3600)


@task(max_attempts=1, timeout=0.5)
def hangs_in_thread() -> None:
    time.sleep(3600)  # outlives its job; must not keep the process from exiting


@task(max_attempts=1)
async def deep_result() -> object:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    return value


@task(max_lost=1)
async def kills_its_worker() -> None:
    os._exit(17)


@task
async def counted(key: str) -> int:
    """A normal job that records the processes it ran in (to count its runs)."""
    redis = current_job().state["redis"]
    await redis.rpush(key, os.getpid())
    return os.getpid()


async def open_redis(state: dict[str, object]) -> None:
    import redis.asyncio as aioredis

    state["redis"] = aioredis.from_url(os.environ["AIOQUEUE_REDIS_URL"])


async def close_redis(state: dict[str, object]) -> None:
    await state["redis"].aclose()  # type: ignore[attr-defined]


worker = Worker(
    [
        noop,
        surrogate_message,
        unprintable,
        retry_timedelta,
        retry_inf,
        huge_message,
        hangs,
        hangs_in_thread,
        deep_result,
        kills_its_worker,
        counted,
    ],
    redis_url=os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0"),
    queues=[os.environ.get("TEST_QUEUE", "default")],
    lease=float(os.environ.get("TEST_LEASE", "30")),
    grace=2,
    sync_threads=2,
    on_startup=[open_redis],
    on_shutdown=[close_redis],
)
