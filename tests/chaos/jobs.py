"""Jobs and a worker for the chaos suite: each execution is recorded in Redis."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis

from aioqueue import Worker, current_job, task
from aioqueue.cron import cron

# where jobs record their executions: CHAOS_RECORD_URL lets a test keep these
# writes off a link it is cutting (a retried HINCRBY would count one run twice)
URL = os.environ.get("CHAOS_RECORD_URL") or os.environ.get(
    "AIOQUEUE_REDIS_URL", "redis://localhost:6379/0"
)
_clients: dict[tuple[int, str], aioredis.Redis] = {}


def _redis() -> aioredis.Redis:
    """A client for the Redis this job's worker uses (one per event loop)."""
    import asyncio

    url = current_job().state.get("chaos_url", URL)
    key = (id(asyncio.get_running_loop()), url)
    if key not in _clients:
        _clients[key] = aioredis.from_url(url, socket_timeout=5)
    return _clients[key]


def in_process_worker(url: str, queue: str, **kwargs: object) -> Worker:
    """A worker for this process's own event loop, whose jobs record into ``url``."""

    async def remember_url(state: dict[str, object]) -> None:
        state["chaos_url"] = url

    return Worker(
        [record, blocks_loop, noop],
        redis_url=url,
        queues=[queue],
        on_startup=[remember_url],
        **kwargs,  # type: ignore[arg-type]
    )


@task(max_attempts=5, backoff=0.05, backoff_max=0.5, max_lost=20)
async def record(run: str, seconds: float) -> int:
    """Records (job id → executions) before and after its work."""
    ctx = current_job()
    await _redis().hincrby(f"chaos:{run}:started", ctx.job_id, 1)
    if seconds:
        await anyio.sleep(seconds)
    await _redis().hincrby(f"chaos:{run}:finished", ctx.job_id, 1)
    return os.getpid()


@task(max_attempts=5, backoff=0.05, backoff_max=0.5, max_lost=20)
async def announced(run: str, seconds: float) -> int:
    """``record`` that also pushes its job id to ``chaos:<run>:starts`` as it starts,
    so a test can wait (BLPOP) for a job to be running instead of polling."""
    ctx = current_job()
    async with _redis().pipeline(transaction=False) as pipe:
        pipe.hincrby(f"chaos:{run}:started", ctx.job_id, 1)
        pipe.rpush(f"chaos:{run}:starts", ctx.job_id)
        await pipe.execute()
    if seconds:
        await anyio.sleep(seconds)
    await _redis().hincrby(f"chaos:{run}:finished", ctx.job_id, 1)
    return os.getpid()


@task(max_attempts=5, backoff=0.05, backoff_max=0.5, max_lost=20)
async def tallied(run: str, total: int) -> None:
    """``record`` of a job that does no work, plus one signal for the whole run: the job
    that makes ``total`` distinct ids finished pushes to ``chaos:<run>:all-done``, so a
    test waits (BLPOP) once instead of awaiting every job."""
    ctx = current_job()
    finished = f"chaos:{run}:finished"
    async with _redis().pipeline(transaction=True) as pipe:  # one atomic count
        pipe.hincrby(f"chaos:{run}:started", ctx.job_id, 1)
        pipe.hincrby(finished, ctx.job_id, 1)
        pipe.hlen(finished)
        _, runs, distinct = await pipe.execute()
    if runs == 1 and distinct == total:  # exactly one job sees this
        await _redis().rpush(f"chaos:{run}:all-done", ctx.job_id)


@task(max_attempts=3, max_lost=1)
async def dies() -> None:
    """Takes its whole worker process down, every time."""
    os._exit(13)


@task(max_attempts=2, backoff=0.01)
async def raises() -> None:
    raise RuntimeError("poison")


@task
async def noop() -> None:
    return None


@task(max_attempts=1, timeout=0.2)
async def hangs() -> None:
    await anyio.sleep(3600)


@task(max_attempts=3)
async def blocks_loop(run: str, seconds: float) -> int:
    """On its first attempt blocks the whole event loop (as a sync call by mistake
    would), so the worker can neither heartbeat nor notice it lost the lease."""
    ctx = current_job()
    await _redis().hincrby(f"chaos:{run}:started", ctx.job_id, 1)
    if ctx.attempt == 1:
        time.sleep(seconds)
        # recorded without an await: the job ends in the step its loop wakes in. Awaited,
        # the worker could first read the heartbeat's "lease lost" and stop the job (its
        # record written, no finish sent): right too, but not the refused finish tested
        with redis.Redis.from_url(current_job().state.get("chaos_url", URL)) as client:
            client.hincrby(f"chaos:{run}:finished", ctx.job_id, 1)
        return os.getpid()
    await _redis().hincrby(f"chaos:{run}:finished", ctx.job_id, 1)
    return os.getpid()


def _settings() -> dict[str, Any]:
    """The worker's settings from the test's environment."""
    lease = float(os.environ.get("TEST_LEASE", "2"))
    return {
        "redis_url": URL,
        "queues": [os.environ.get("TEST_QUEUE", "chaos")],
        "lease": lease,
        "heartbeat": lease / 4,
        "grace": float(os.environ.get("TEST_GRACE", "10")),
        "concurrency": int(os.environ.get("TEST_CONCURRENCY", "50")),
    }


worker = Worker([record, announced, tallied, dies, raises, hangs, blocks_loop], **_settings())


def cron_worker() -> Worker:
    """``worker`` plus two per-second schedules of ``announced(TEST_RUN, 0)``: "skip"
    (missed ticks are skipped, the default) and "catch-up" (``catch_up=True``)."""
    run = os.environ["TEST_RUN"]
    return Worker(
        [record, announced],
        cron=[
            cron("* * * * * *", announced.call(run, 0), name="skip"),
            cron("* * * * * *", announced.call(run, 0), name="catch-up", catch_up=True),
        ],
        **_settings(),
    )
