"""Handoff: claimed deliveries reach consumers with as few wake-ups as the jobs need."""

from __future__ import annotations

import asyncio

import anyio
import anyio.abc
import pytest

from aioqueue._worker.handoff import Handoff

pytestmark = pytest.mark.anyio


async def consumer(
    handoff: Handoff[int], name: int, taken: list[tuple[int, int]], gate: anyio.Event | None
) -> None:
    while True:
        try:
            item = await handoff.get()
        except anyio.EndOfStream:
            return
        taken.append((name, item))
        if gate is not None:
            await gate.wait()  # a job waiting on I/O


async def put_to_idle_consumers(
    tg: anyio.abc.TaskGroup,
    handoff: Handoff[int],
    taken: list[tuple[int, int]],
    gate: anyio.Event | None,
    items: int,
) -> None:
    """Ten consumers idle on the handoff, then ``items`` put, and run as far as they go."""
    for name in range(10):
        tg.start_soon(consumer, handoff, name, taken, gate)
    await anyio.wait_all_tasks_blocked()
    for item in range(items):
        handoff.put(item)
    await anyio.wait_all_tasks_blocked()


async def test_jobs_that_do_not_wait_run_back_to_back_on_one_or_two_consumers() -> None:
    handoff: Handoff[int] = Handoff()
    taken: list[tuple[int, int]] = []
    async with anyio.create_task_group() as tg:
        await put_to_idle_consumers(tg, handoff, taken, None, 100)
        handoff.close()
    assert sorted(item for _, item in taken) == list(range(100))
    assert len({name for name, _ in taken}) <= 2  # not one wake-up per job


async def test_jobs_that_wait_get_a_consumer_each() -> None:
    handoff: Handoff[int] = Handoff()
    taken: list[tuple[int, int]] = []
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        await put_to_idle_consumers(tg, handoff, taken, gate, 10)
        assert len({name for name, _ in taken}) == 10  # all ten started, none waits for another
        assert len(handoff) == 0
        gate.set()
        handoff.close()
    assert sorted(item for _, item in taken) == list(range(10))


async def test_close_lets_consumers_take_what_is_left_then_ends_them() -> None:
    handoff: Handoff[int] = Handoff()
    for item in range(5):
        handoff.put(item)
    handoff.close()
    with pytest.raises(anyio.ClosedResourceError):
        handoff.put(5)
    taken: list[tuple[int, int]] = []
    async with anyio.create_task_group() as tg:
        for name in range(3):
            tg.start_soon(consumer, handoff, name, taken, None)
    assert sorted(item for _, item in taken) == list(range(5))


async def test_a_woken_consumer_cancelled_before_it_runs_passes_the_wake_up_on() -> None:
    handoff: Handoff[int] = Handoff()
    taken: list[tuple[int, int]] = []
    first = asyncio.create_task(consumer(handoff, 0, taken, None))
    await anyio.wait_all_tasks_blocked()
    second = asyncio.create_task(consumer(handoff, 1, taken, None))
    await anyio.wait_all_tasks_blocked()
    handoff.put(1)  # wakes the first idle consumer...
    first.cancel()  # ...which is cancelled before it runs
    await anyio.wait_all_tasks_blocked()
    assert first.cancelled()
    assert taken == [(1, 1)]
    handoff.close()
    await second
