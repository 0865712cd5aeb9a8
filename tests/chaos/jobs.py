"""Jobs and a worker for the chaos suite: each execution is recorded in Redis."""

from __future__ import annotations

import os
import time

import anyio
import redis.asyncio as aioredis

from aioqueue import Worker, current_job, task

URL = os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0")
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
    await _redis().hincrby(f"chaos:{run}:finished", ctx.job_id, 1)
    return os.getpid()


worker = Worker(
    [record, dies, raises, hangs, blocks_loop],
    redis_url=URL,
    queues=[os.environ.get("TEST_QUEUE", "chaos")],
    lease=float(os.environ.get("TEST_LEASE", "2")),
    heartbeat=float(os.environ.get("TEST_LEASE", "2")) / 4,
    grace=float(os.environ.get("TEST_GRACE", "10")),
    concurrency=int(os.environ.get("TEST_CONCURRENCY", "50")),
)
