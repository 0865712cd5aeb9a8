"""Chaos under the real supervisor: `python -m aioqueue run tests.chaos.jobs:worker --processes N`.

The supervisor's JSON log lines (``tests.supervised``) say which children fetch
jobs and with which pids; Redis says what ran. Each scenario ends with the
chaos suite's audit: every job completed, duplicates within the bound the
design promises, nothing stuck in active, scheduled or ready, dead letters exact.

Short forms run in `make test`; `make chaos` (AIOQUEUE_CHAOS=long) the long forms.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import Job, JobStatus, Queue
from aioqueue._protocol.keys import QueueKeys
from tests.chaos import jobs
from tests.chaos.harness import (
    audit,
    enqueue_records,
    live_children,
    lost_deliveries,
    scale,
    wait_all,
)
from tests.redis_server import RedisServer
from tests.supervised import Event, Supervised

pytestmark = pytest.mark.anyio

Supervise = Callable[..., Supervised]


async def wait_for(sup: Supervised, name: str, count: int = 1, **fields: Any) -> list[Event]:
    """``Supervised.wait_for`` (a blocking wait on the log) off the event loop."""
    return await anyio.to_thread.run_sync(partial(sup.wait_for, name, count, 60.0, **fields))


async def exit_code(sup: Supervised, timeout: float = 60.0) -> int:
    return await anyio.to_thread.run_sync(sup.wait, timeout)


def blocking_client(url: str) -> aioredis.Redis:
    """For BLPOPs longer than redis-py's default 5 s read timeout; each names its own."""
    return aioredis.from_url(url, socket_timeout=None)


async def redis_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


# -- #2: SIGTERM the supervisor mid-load, start it again -------------------------------


async def test_sigterm_supervisor_mid_load_then_restart_loses_nothing(
    redis_url: str, queue_name: str, supervise: Supervise
) -> None:
    n = scale(1500, 10_000)
    run = secrets.token_hex(4)
    # A lease far longer than the test: a job that had to wait for its lease to
    # expire would show as `l` > 0 and `reaped` in the stats (and stall the run).
    # Grace 1 s: the short jobs finish in the drain, the long ones are handed back.
    env = {"TEST_LEASE": "60", "TEST_GRACE": "1", "TEST_CONCURRENCY": "20"}
    keys = QueueKeys(queue_name)
    client = blocking_client(redis_url)
    first = supervise("--processes", "2", env=env)
    await wait_for(first, "supervisor.child_ready", 2)
    try:
        async with Queue(redis_url, name=queue_name) as queue:
            long = await queue.enqueue_many(jobs.announced.call(run, 4.0) for _ in range(4))
            short = await enqueue_records(queue, run, n, 0.05)
            for _ in long:  # all four long jobs run
                assert await client.blpop([f"chaos:{run}:starts"], timeout=30)
            # mid-load: early enough for the 4 s jobs to be running in the long form too
            await short[min(n // 3, 500)].result(timeout=60)
            in_flight = await client.zcard(keys.active)
            first.send(signal.SIGTERM)
            assert await exit_code(first) == 0
            # nothing holds a lease any more: every delivery finished or was handed back
            assert await client.zcard(keys.active) == 0
            assert {await j.status() for j in long} == {JobStatus.QUEUED}
            assert not first.matching("supervisor.child_exited", reason="crashed")
            exits = first.matching("supervisor.child_exited")
            assert [e["exit"] for e in exits] == ["exit code 0"] * 2
            done_before = len((await audit(redis_url, run, queue_name)).finished)

            second = supervise("--processes", "2", env=env)
            await wait_all([*long, *short], timeout=90)
            second.send(signal.SIGTERM)
            assert await exit_code(second) == 0
    finally:
        await client.aclose()
    ids = [j.id for j in [*long, *short]]
    result = await audit(redis_url, run, queue_name)
    assert result.missing(ids) == []
    assert result.duplicates() == 0  # a drain finishes a job or hands it back: never both
    assert all(result.started[j.id] == 2 for j in long)  # handed back at the grace's end
    assert (result.active, result.scheduled, result.ready) == (0, 0, 0)
    assert result.dead == set()
    assert await lost_deliveries(redis_url, queue_name, ids) == {}
    assert "reaped" not in result.stats
    print(
        f"\nchaos supervisor sigterm: jobs={len(ids)} in_flight_at_stop={in_flight}"
        f" done_before_restart={done_before} handed_back={len(long)}"
        f" duplicates={result.duplicates()} lost=0"
    )


# -- #8: delayed jobs and cron across a supervisor restart ---------------------------


def cron_ticks(finished: dict[str, int], name: str) -> list[int]:
    prefix = f"cron:{name}:"
    return sorted(int(i.removeprefix(prefix)) for i in finished if i.startswith(prefix))


async def ticks_of_each(client: Any, starts: str, n: int) -> None:
    """Waits until each of the two schedules has started ``n`` more ticks: a count of
    starts of either would let the catch-up schedule's extra tick stand for one of the
    other's (under load, a restart's first tick of "skip" came after 3 of "catch-up")."""
    counts = {"skip": 0, "catch-up": 0}
    while min(counts.values()) < n:
        popped = await client.blpop([starts], timeout=10)
        assert popped, counts
        job_id = popped[1].decode() if isinstance(popped[1], bytes) else popped[1]
        counts[job_id.split(":")[1]] += 1


def contiguous(ticks: list[int]) -> bool:
    return all(b - a == 1000 for a, b in itertools.pairwise(ticks))


async def test_delayed_jobs_and_cron_across_a_supervisor_restart(
    redis_url: str, queue_name: str, supervise: Supervise
) -> None:
    n = scale(300, 3000)
    outage = scale(2, 5)  # seconds no worker runs
    run = secrets.token_hex(4)
    env = {"TEST_RUN": run, "TEST_LEASE": "60", "TEST_GRACE": "5"}
    target = "tests.chaos.jobs:cron_worker"
    client = blocking_client(redis_url)
    starts = f"chaos:{run}:starts"  # cron ticks only: the delayed jobs are `record`s
    try:
        first = supervise("--processes", "2", target=target, env=env)
        async with Queue(redis_url, name=queue_name) as queue:
            await wait_for(first, "supervisor.child_ready", 2)
            # due before the stop, while no worker runs, and after the restart
            span = 3.0 + outage + 3.0
            delayed: list[Job[int]] = []
            for start in range(0, n, 500):
                delayed += await queue.enqueue_many(
                    jobs.record.options(delay=random.uniform(0.05, span)).call(run, 0)
                    for _ in range(min(500, n - start))
                )
            await ticks_of_each(client, starts, 3)
            first.send(signal.SIGTERM)
            assert await exit_code(first) == 0
            stopped_at = await redis_ms(client)
            await anyio.sleep(outage)  # the outage itself
            restarted_at = await redis_ms(client)

            second = supervise("--processes", "2", target=target, env=env)
            await wait_for(second, "supervisor.child_ready", 2)
            await wait_all(delayed, timeout=60)
            await ticks_of_each(client, starts, 2)
            second.send(signal.SIGTERM)
            assert await exit_code(second) == 0
    finally:
        await client.aclose()
    result = await audit(redis_url, run, queue_name)
    assert result.missing([j.id for j in delayed]) == []
    assert result.duplicates() == 0
    cron_ids = [i for i in result.started if i.startswith("cron:")]
    assert all(result.started[i] == result.finished.get(i) == 1 for i in cron_ids)  # none doubled
    assert (result.active, result.scheduled) == (0, 0)
    # A tick fired in the instant before the last SIGTERM is not lost: it waits in
    # the ready list for the next start. Only such ticks may be left there.
    left = [
        i.decode()
        for i in await blocking_client(redis_url).lrange(QueueKeys(queue_name).ready, 0, -1)
    ]
    last_run = max(int(i.rsplit(":", 1)[1]) for i in cron_ids)
    assert all(i.startswith("cron:") and int(i.rsplit(":", 1)[1]) >= last_run for i in left), left
    assert len(left) <= 2  # at most the next tick of each of the two schedules
    assert result.dead == set()
    assert await lost_deliveries(redis_url, queue_name, [*cron_ids, *(j.id for j in delayed)]) == {}

    skip, catch = cron_ticks(result.finished, "skip"), cron_ticks(result.finished, "catch-up")
    skip_before = [t for t in skip if t <= stopped_at]
    skip_after = [t for t in skip if t > stopped_at]
    catch_before = [t for t in catch if t <= stopped_at]
    catch_after = [t for t in catch if t > stopped_at]
    for ticks in (skip_before, skip_after, catch_before, catch_after):
        assert len(ticks) >= 2 and contiguous(ticks), (skip, catch, stopped_at, restarted_at)
    # skip (the default): no tick of the stopped interval ran
    assert skip_after[0] > restarted_at
    # catch_up: the latest missed tick ran once at start, the older ones not: it is the
    # tick just before the first one the skip schedule ran
    assert catch_after[0] == skip_after[0] - 1000
    assert catch_after[0] - catch_before[-1] > 1000
    # each child makes the start-up decision; the first to fire the tick logs it
    caught = second.matching("cron.caught_up", status="fired")
    assert min(e["tick"] for e in caught) == catch_after[0]
    print(
        f"\nchaos supervisor cron restart: delayed={n} outage={outage}s"
        f" ticks skip={len(skip)} catch-up={len(catch)}"
        f" skipped={(skip_after[0] - skip_before[-1]) // 1000 - 1} duplicates=0 lost=0"
    )


# -- #9: 50 producers while the workers consume ---------------------------------------


async def test_fifty_producers_while_workers_consume_counts_add_up(
    redis_url: str, queue_name: str, supervise: Supervise
) -> None:
    n = scale(20_000, 100_000)
    processes = scale(2, 4)
    producers = 50
    run = secrets.token_hex(4)
    sup = supervise(
        "--processes", str(processes), env={"TEST_LEASE": "60", "TEST_CONCURRENCY": "100"}
    )
    await wait_for(sup, "supervisor.child_ready", processes)
    ids: list[str] = []
    singles = 0

    async def produce(seed: int, share: int) -> None:
        nonlocal singles
        rng = random.Random(seed)
        async with Queue(redis_url, name=queue_name) as queue:  # a client of its own
            left = share
            while left:
                if rng.random() < 0.9:
                    ids.append((await queue.enqueue(jobs.tallied, run, n)).id)
                    singles += 1
                    left -= 1
                else:
                    size = min(left, rng.randint(2, 100))
                    batch = await queue.enqueue_many(jobs.tallied.call(run, n) for _ in range(size))
                    ids.extend(j.id for j in batch)
                    left -= size

    client = blocking_client(redis_url)
    try:
        began = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(producers):
                tg.start_soon(produce, i, n // producers + (i < n % producers))
        enqueued_in = time.monotonic() - began
        # the job that completes the count says so (awaiting each job is tested elsewhere)
        assert await client.blpop([f"chaos:{run}:all-done"], timeout=300)
        took = time.monotonic() - began
    finally:
        await client.aclose()
    sup.send(signal.SIGTERM)
    assert await exit_code(sup) == 0
    assert len(ids) == len(set(ids)) == n
    result = await audit(redis_url, run, queue_name)
    assert set(result.finished) == set(ids)
    assert result.missing(ids) == []
    assert result.duplicates() == 0  # no fault injected: exactly once
    assert sum(result.started.values()) == sum(result.finished.values()) == n
    assert result.stats.get("complete") == n  # the queue's own count agrees
    assert (result.active, result.scheduled, result.ready) == (0, 0, 0)
    assert result.dead == set()
    print(
        f"\nchaos producers: jobs={n} producers={producers} processes={processes}"
        f" single_enqueues={singles} enqueued_in={enqueued_in:.1f}s all_done_in={took:.1f}s"
        f" duplicates=0 lost=0"
    )


# -- #1, upgraded: the supervisor replaces SIGKILLed children ---------------------------


async def test_supervisor_replaces_sigkilled_children_while_jobs_run(
    redis_url: str, queue_name: str, supervise: Supervise
) -> None:
    n = scale(2000, 10_000)
    processes = 2
    run = secrets.token_hex(4)
    sup = supervise(
        "--processes", str(processes), "--restart-backoff", "0.02",
        env={"TEST_LEASE": "1", "TEST_CONCURRENCY": "20"},
    )  # fmt: skip
    await wait_for(sup, "supervisor.child_ready", processes)
    kills: list[int] = []
    in_flight_at_kills = 0
    async with Queue(redis_url, name=queue_name) as queue:
        handles = await enqueue_records(queue, run, n, 0.05)
        finished = anyio.Event()

        async def killer() -> None:
            nonlocal in_flight_at_kills
            low, high = (1.0, 3.0) if scale(0, 1) else (0.3, 0.8)
            while not finished.is_set():
                with anyio.move_on_after(random.uniform(low, high)):  # the chaos schedule
                    await finished.wait()
                if finished.is_set():
                    return
                victim = random.choice(live_children(sup))
                in_flight_at_kills += await queue.redis.zcard(QueueKeys(queue_name).active)
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)
                # the supervisor sees it die and puts a fetching process in its place
                await wait_for(sup, "supervisor.child_exited", pid=victim)
                await wait_for(sup, "supervisor.child_ready", processes + len(kills))

        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            await wait_all(handles, timeout=300)
            finished.set()
    sup.send(signal.SIGTERM)
    assert await exit_code(sup) == 0
    exits = {e["pid"]: e for e in sup.matching("supervisor.child_exited")}
    assert all(exits[pid]["exit"] == "killed by SIGKILL" for pid in kills)
    (stopped,) = sup.matching("supervisor.stopped")
    assert stopped["restarts"] == len(kills)
    result = await audit(redis_url, run, queue_name)
    assert len(kills) >= 1
    assert result.missing([j.id for j in handles]) == []
    assert result.duplicates() <= in_flight_at_kills
    assert (result.active, result.scheduled, result.ready) == (0, 0, 0)
    assert result.dead == set()
    print(
        f"\nchaos supervisor sigkill: jobs={n} kills={len(kills)}"
        f" restarts={stopped['restarts']} duplicates={result.duplicates()}"
        f" bound={in_flight_at_kills} lost=0"
    )


# -- #12: a worker warns at start when Redis may lose jobs -----------------------------


@pytest.mark.parametrize(
    ("extra", "appendonly", "warnings"),
    [
        (
            ["--maxmemory-policy", "allkeys-lru"],
            False,
            {"worker.redis_may_evict", "worker.redis_not_persistent"},
        ),
        ([], True, set()),
    ],
    ids=["evicting-and-volatile", "noeviction-with-aof"],
)
async def test_worker_warns_at_start_when_redis_may_lose_jobs(
    queue_name: str,
    supervise: Supervise,
    extra: list[str],
    appendonly: bool,
    warnings: set[str],
) -> None:
    server = RedisServer(appendonly=appendonly, extra=extra)
    server.start()
    try:
        sup = supervise("--processes", "0", url=server.url)
        (started,) = await wait_for(sup, "worker.started")  # the checks run before it
        sup.send(signal.SIGTERM)
        assert await exit_code(sup) == 0
    finally:
        server.cleanup()
    seen = {
        e["event"]: e
        for e in sup.events
        if e["event"] in {"worker.redis_may_evict", "worker.redis_not_persistent"}
    }
    assert set(seen) == warnings, sup.dump()
    for event in seen.values():
        assert event["level"] == "warning"
        assert event["_at"] <= started["_at"]  # at start, before the first job
    if warnings:
        evict, volatile = seen["worker.redis_may_evict"], seen["worker.redis_not_persistent"]
        assert evict["policy"] == "allkeys-lru" and "noeviction" in evict["advice"]
        assert "appendonly yes" in volatile["advice"]
