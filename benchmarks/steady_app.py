"""Tasks and a worker for ``steady.py``."""

from __future__ import annotations

import os
import time

from aioqueue import Worker, task


@task
async def noop() -> None:
    return None


@task
async def stamp() -> float:
    return time.monotonic()


@task
async def burn() -> None:
    """About 5 ms of pure Python."""
    end = time.process_time() + 0.005
    while time.process_time() < end:
        pass


worker = Worker(
    [noop, stamp, burn],
    redis_url=os.environ.get("AIOQUEUE_REDIS_URL", ""),
    queues=[os.environ.get("STEADY_QUEUE", "steady")],
)
