"""Tasks and workers for ``cpu_bursts.py``: pure-Python CPU work and a no-op."""

from __future__ import annotations

import os
import time

from aioqueue import Worker, task


def spin(n: int) -> int:
    total = 0
    for i in range(n):  # pure Python: holds the GIL the whole time
        total += i
    return total


@task
def burn(n: int) -> tuple[int, float, float]:
    """CPU-bound (a plain def): runs in a thread of its worker process.
    Returns (pid, start, end), monotonic: one clock for all processes here."""
    start = time.monotonic()
    spin(n)
    return os.getpid(), start, time.monotonic()


@task(executor="process")
def burn_in_pool(n: int) -> tuple[int, float, float]:
    """The same work in the worker's process pool."""
    start = time.monotonic()
    spin(n)
    return os.getpid(), start, time.monotonic()


@task
async def noop() -> None:
    return None


def _worker(*tasks: object) -> Worker:
    return Worker(
        list(tasks),  # type: ignore[arg-type]
        redis_url=os.environ.get("AIOQUEUE_REDIS_URL", ""),
        queues=[os.environ.get("CPU_BENCH_QUEUE", "cpu-bench")],
    )


threads = _worker(burn, noop)  # CPU-bound task registered: the claim classifies every job
pool = _worker(burn_in_pool)
io_only = _worker(noop)  # no CPU-bound task: the claim's plain path
