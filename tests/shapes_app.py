"""The worker of the output-shape tests (``tests/test_output_shapes.py``): tasks that
complete, fail, retry and take a while, and one recurring job, so that one short run
produces each ``--json`` shape and the usual log events."""

from __future__ import annotations

import os

import anyio

from aioqueue import Retry, Worker, task
from aioqueue.cron import every


@task
async def add(a: int, b: int) -> int:
    return a + b


@task(max_attempts=1)
async def boom(message: str) -> None:
    raise ValueError(message)


@task(max_attempts=2, backoff=0.01, backoff_max=0.01)
async def once_more() -> str:
    raise Retry(defer=0.01)


@task(max_attempts=1)
async def nap(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "rested"


@task
async def tick() -> None:
    return None


QUEUE = os.environ.get("TEST_QUEUE", "default")

worker = Worker(
    [add, boom, once_more, nap, tick],
    redis_url=os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0"),
    queues=[QUEUE],
    # hourly: a stable row for `aioqueue cron --json`; each_second: ticks fired in a short run
    cron=[
        every(3600, tick.options(queue=QUEUE), name="hourly"),
        every(1, tick.options(queue=QUEUE), name="each_second"),
    ],
    grace=5,
)
