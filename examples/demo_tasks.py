"""Tasks of ``make demo``: I/O-bound, CPU-bound, a delayed one and one that always fails.

The Redis URL and the queue come from AIOQUEUE_REDIS_URL / AIOQUEUE_QUEUES,
which ``aioqueue run`` prefers to the values given here.
"""

from __future__ import annotations

import os
import random

import anyio

from aioqueue import Worker, task


@task
async def fetch_page(url: str) -> dict[str, object]:
    """I/O-bound: waits on the network (simulated); thousands can wait at once."""
    await anyio.sleep(random.uniform(0.1, 0.5))
    return {"url": url, "status": 200, "pid": os.getpid()}


@task
def count_primes(limit: int) -> dict[str, int]:
    """CPU-bound: a plain ``def`` runs in a thread and counts as CPU-bound, so each
    worker process takes one at a time and a burst of them spreads over the processes
    (``aioqueue run --processes N``: separate processes, separate cores)."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit + 1, n)))
    total = 0
    for n in range(limit):  # a pure-Python loop on purpose: it holds the GIL
        total += sieve[n]
    return {"limit": limit, "primes": total, "pid": os.getpid()}


@task
async def send_reminder(text: str) -> str:
    return f"reminder sent: {text}"


@task(max_attempts=2, backoff=0.1, backoff_max=0.2)
async def charge_card(order: int) -> None:
    raise ConnectionError(f"payment gateway refused order {order}")


worker = Worker([fetch_page, count_primes, send_reminder, charge_card], concurrency=8, grace=10)
