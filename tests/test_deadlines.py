"""The job timers of aioqueue/_worker/deadlines.py: asyncio.Timeout's contract, one heap.

Timers here either never fire (an hour) or fire at once (a deadline already past, or
moved to now): no test waits on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from aioqueue._worker import deadlines as dl
from aioqueue._worker.deadlines import Deadlines

pytestmark = pytest.mark.anyio
HOUR = 3600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the worker's timers are asyncio's (redis-py ties it to asyncio)


async def test_a_deadline_in_the_past_ends_the_block_with_timeout_error() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    timer = deadlines.timer(-1.0)
    with pytest.raises(TimeoutError):
        async with timer:
            await asyncio.Event().wait()
    assert timer.expired()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_moved_to_now_it_fires_on_the_next_pass_and_once() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    timer = deadlines.timer(HOUR)

    async def job() -> None:
        async with timer:
            timer.reschedule(-1.0)
            timer.reschedule(-1.0)  # abort then shutdown: one cancellation
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await job()
    assert timer.expired()
    with pytest.raises(RuntimeError):
        timer.reschedule(-1.0)
    assert deadlines._live == 0


async def test_a_block_that_ends_in_time_leaves_no_waiting_timer() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    timer = deadlines.timer(HOUR)
    async with timer:
        await asyncio.sleep(0)
    assert not timer.expired()
    assert deadlines._live == 0
    with pytest.raises(RuntimeError):
        timer.reschedule(-1.0)  # left: nothing to move


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    timer = deadlines.timer(HOUR)
    entered = asyncio.Event()

    async def job() -> None:
        async with timer:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(job())
    await entered.wait()
    timer.reschedule(-1.0)  # fires on the next pass...
    task.cancel()  # ...when the task is being cancelled by its owner too
    with pytest.raises(asyncio.CancelledError):
        await task
    assert timer.expired()


async def test_a_job_that_swallows_the_cancellation_still_reads_as_expired() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    timer = deadlines.timer(-1.0)
    async with timer:
        with contextlib.suppress(asyncio.CancelledError):  # task code that catches all
            await asyncio.Event().wait()
    assert timer.expired()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_an_earlier_deadline_rearms_the_one_loop_timer() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    late = deadlines.timer(HOUR)
    async with late:
        assert deadlines._armed > asyncio.get_running_loop().time() + HOUR / 2
        early = deadlines.timer(0.0)
        with pytest.raises(TimeoutError):
            async with early:
                await asyncio.Event().wait()
        assert not late.expired()
    assert deadlines._live == 0


async def test_timers_of_many_short_jobs_do_not_pile_up_in_the_heap() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    for _ in range(5_000):
        async with deadlines.timer(HOUR):
            pass
    # each ended long before its deadline: dead entries are dropped in bulk
    assert len(deadlines._heap) <= 2 * dl._COMPACT_AT
    # one loop timer all along: it was armed by the first and never moved
    assert deadlines._handle is not None
