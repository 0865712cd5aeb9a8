"""aioqueue.testing's run_worker with what a worker runs besides async tasks:
plain ``def`` tasks (in the worker's threads), and when the queues never settle."""

from __future__ import annotations

import threading

import anyio
import pytest

from aioqueue import JobStatus, Queue, Worker, current_job, task
from aioqueue.testing import NotSettled, TestClock, run_worker

pytestmark = pytest.mark.anyio

seen: list[tuple[str, int, bool]] = []


@task(max_attempts=2, backoff=30)
def sync_flaky(n: int) -> int:
    # runs in a worker thread: current_job() and the clock work there too
    seen.append(
        ("sync", current_job().attempt, threading.current_thread() is threading.main_thread())
    )
    if current_job().attempt == 1:
        raise ConnectionError("first attempt fails")
    return n + 1


@task
def sync_broken() -> None:
    raise LookupError("from a thread")


async def test_a_plain_def_task_runs_and_retries_under_the_test_clock(
    aioqueue_queue: Queue, aioqueue_clock: TestClock
) -> None:
    seen.clear()
    async with run_worker(Worker([sync_flaky])) as w:
        job = await aioqueue_queue.enqueue(sync_flaky, 1)
        await w.drain(fail_fast=True)
        info = await job.info()
        assert info.status is JobStatus.SCHEDULED
        # the task's own error, not one of the plugin's (it once failed in the thread)
        assert info.error is not None and info.error.type.endswith("ConnectionError")
        await aioqueue_clock.advance(seconds=30, fail_fast=True)
        assert await job.result(timeout=5) == 2
    assert seen == [("sync", 1, False), ("sync", 2, False)]


async def test_fail_fast_raises_what_a_plain_def_task_raised(aioqueue_queue: Queue) -> None:
    async with run_worker(Worker([sync_broken])) as w:
        await aioqueue_queue.enqueue(sync_broken.options(max_attempts=1))
        with pytest.raises(LookupError, match="from a thread"):
            await w.drain(fail_fast=True)


@task
async def hangs() -> None:
    await anyio.Event().wait()  # never set: the worker's stop ends it


async def test_a_job_that_never_ends_is_not_settled(aioqueue_queue: Queue) -> None:
    async with run_worker(Worker([hangs])) as w:
        job = await aioqueue_queue.enqueue(hangs)
        with pytest.raises(NotSettled, match=f"job {job.id} running"):
            await w.drain(timeout=0.2)
