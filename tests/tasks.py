"""Tasks used by the tests (importable by worker processes too)."""

from __future__ import annotations

import gc
import os
import threading
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
        "frozen": gc.get_freeze_count(),  # objects left out of full collections
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


def _spin(n: int) -> int:
    total = 0
    for i in range(n):  # pure Python: holds the GIL
        total += i
    return total


@task(max_attempts=1)
def rendezvous(url: str, prefix: str, spin: int = 20_000) -> dict[str, object]:
    """A CPU-bound (plain def) job that meets a partner: the k-th job to start
    pairs with the (k+1)-th (k odd) and waits for it to start, so a process
    that holds more CPU jobs than it can run at once never lets both run.
    Records {pid, k, start, end} (monotonic: one clock for all processes)."""
    import json

    import redis

    client = redis.Redis.from_url(url)
    try:
        start = time.monotonic()
        k = int(client.incr(f"{prefix}:started"))
        pair = (k + 1) // 2
        met = True
        if k % 2:
            met = client.blpop([f"{prefix}:pair:{pair}"], timeout=20) is not None
        else:
            client.rpush(f"{prefix}:pair:{pair}", "go")
        _spin(spin)
        record = {"pid": os.getpid(), "k": k, "start": start, "end": time.monotonic(), "met": met}
        client.rpush(f"{prefix}:runs", json.dumps(record))
        return record
    finally:
        client.close()


GATES: dict[str, threading.Event] = {}
STARTED: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


def started(group: str) -> threading.Event:
    return STARTED.setdefault(group, threading.Event())


@task(max_attempts=1)
def gated(group: str, i: int) -> int:
    """CPU-bound by kind (a plain def): sets ``started(group)``, then holds its CPU
    slot until the test opens ``gate(f"{group}-{i}")`` (workers in the test's process)."""
    started(group).set()
    if not gate(f"{group}-{i}").wait(30):
        raise TimeoutError(f"gate {group}-{i} never opened")
    return i
