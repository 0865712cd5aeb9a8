"""A shared Queue across dropped links: killed connections, a restart, a silent drop.

While Redis answers, no call fails: a connection it closed is replaced at once,
an enqueue (idempotent under its job id) and a watch are sent again, a claim
hands back the deliveries it made. A link dropped without a FIN is found by
the results connection's health check.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import Job, Queue, RedisUnavailable, Worker
from tests.chaos import jobs
from tests.chaos.harness import audit, scale
from tests.chaos.proxy import ChaosProxy
from tests.conftest import running
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def recording_worker(url: str, queue: str, record_url: str, **kwargs: object) -> Worker:
    """A worker on ``url`` whose jobs record their runs in another Redis: a count
    written over a link that is being killed could itself be sent twice."""

    async def remember(state: dict[str, object]) -> None:
        state["chaos_url"] = record_url

    return Worker(
        [jobs.record],
        redis_url=url,
        queues=[queue],
        on_startup=[remember],
        concurrency=200,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def killer(tcp_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(tcp_redis.url)
    yield client
    await client.aclose()


async def test_no_call_fails_while_every_connection_is_killed_every_50ms(
    tcp_redis: RedisServer, killer: aioredis.Redis, redis_url: str, queue_name: str
) -> None:
    run = f"kill-{time.monotonic_ns()}"
    n, producers = scale(5000, 20000), 100
    kills = 0
    created: list[Job[int]] = []
    errors: list[BaseException] = []

    async def kill_every_50ms(until: float) -> None:
        nonlocal kills
        while time.monotonic() < until:
            # every client but this one (SKIPME yes): the Queue's, the worker's
            kills += await killer.execute_command("CLIENT", "KILL", "TYPE", "normal")
            kills += await killer.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await anyio.sleep(0.05)

    async def produce(count: int) -> None:
        mine: list[Job[int]] = []
        try:
            for _ in range(count):
                job = await queue.enqueue(jobs.record, run, 0)
                assert job.created
                mine.append(job)
            for job in mine:
                await job.result(timeout=60)
        except Exception as exc:
            errors.append(exc)
        created.extend(mine)

    worker = recording_worker(tcp_redis.url, queue_name, redis_url)
    async with (
        Queue(tcp_redis.tcp_url, name=queue_name) as queue,
        running(worker),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(kill_every_50ms, time.monotonic() + 10)
        async with anyio.create_task_group() as work:
            for _ in range(producers):
                work.start_soon(produce, n // producers)
    assert errors == []
    assert kills > 100
    result = await audit(redis_url, run, queue_name)
    ids = [job.id for job in created]
    assert len(set(ids)) == n
    assert result.missing(ids) == []
    assert set(result.started) == set(ids)  # no job beyond those enqueued
    assert result.duplicates() == 0  # no claim was lost: nothing ran twice
    print(f"\nkilled {kills} connections; {n} jobs, none failed, none twice")


async def test_enqueues_fail_only_while_redis_is_down_across_an_aof_restart(
    tcp_redis: RedisServer, redis_url: str, queue_name: str
) -> None:
    run = f"restart-{time.monotonic_ns()}"
    acknowledged: list[Job[int]] = []
    down_errors = 0
    up_errors: list[BaseException] = []
    state = {"phase": "up"}  # up -> down -> back
    stop = anyio.Event()

    async def produce() -> None:
        nonlocal down_errors
        while not stop.is_set():
            began = state["phase"]
            try:
                acknowledged.append(await queue.enqueue(jobs.record, run, 0))
            except RedisUnavailable as exc:
                if began == "back":
                    up_errors.append(exc)
                else:
                    down_errors += 1
                    await anyio.sleep(0.01)
            await anyio.sleep(0.001)

    worker = recording_worker(tcp_redis.url, queue_name, redis_url)
    async with Queue(tcp_redis.tcp_url, name=queue_name, timeout=1) as queue, running(worker):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(produce)
            while len(acknowledged) < 200:
                await anyio.sleep(0.01)
            state["phase"] = "down"
            tcp_redis.stop(signal.SIGTERM)
            await anyio.sleep(0.5)
            tcp_redis.start()  # returns once it answers PING: AOF loaded
            state["phase"] = "back"
            mark = len(acknowledged)
            while len(acknowledged) < mark + 500:
                await anyio.sleep(0.01)
            stop.set()
        for job in acknowledged:
            await job.result(timeout=30)
    assert up_errors == []
    assert down_errors > 0  # the outage was seen
    result = await audit(redis_url, run, queue_name)
    assert result.missing([j.id for j in acknowledged]) == []
    print(f"\nrestart: {len(acknowledged)} acknowledged, {down_errors} refused while down")


async def normal_clients(admin: aioredis.Redis) -> int:
    """TCP clients that are not subscribers (the test's admin is on the unix socket)."""
    clients = await admin.client_list()
    # the results subscriber by its flag: its last command is 'ping' after a health check
    return sum(1 for c in clients if c["addr"].startswith("127.") and "P" not in c["flags"])


@pytest.mark.parametrize("drop", ["restart", "client-kill", "idle-timeout"])
async def test_connections_dropped_while_idle_cost_no_enqueue(
    tcp_redis: RedisServer, queue_name: str, drop: str
) -> None:
    admin = aioredis.from_url(tcp_redis.url)
    try:
        async with Queue(tcp_redis.tcp_url, name=queue_name, timeout=2) as queue:

            async def enqueue() -> None:
                await queue.enqueue(jobs.noop)

            async with anyio.create_task_group() as tg:  # a burst: connections in use
                for _ in range(50):
                    tg.start_soon(enqueue)
            assert await normal_clients(admin) > 0
            if drop == "restart":
                tcp_redis.stop(signal.SIGTERM)
                tcp_redis.start()
                await admin.aclose()
                admin = aioredis.from_url(tcp_redis.url)
            elif drop == "client-kill":
                assert await admin.execute_command("CLIENT", "KILL", "TYPE", "normal") > 0
            else:
                await admin.config_set("timeout", 1)
                with anyio.fail_after(10):
                    while await normal_clients(admin):  # the server's cron closes them
                        await anyio.sleep(0.1)
            failed = []
            for _ in range(40):
                try:
                    await enqueue()
                except RedisUnavailable as exc:
                    failed.append(exc)
            assert failed == []
    finally:
        await admin.aclose()


async def test_results_arrive_after_the_result_link_is_dropped_silently(
    tcp_redis: RedisServer, redis_url: str, queue_name: str
) -> None:
    proxy = ChaosProxy(tcp_redis.port)
    await proxy.start()
    run = f"silent-{time.monotonic_ns()}"
    worker = recording_worker(tcp_redis.url, queue_name, redis_url)
    try:
        async with Queue(
            f"redis://127.0.0.1:{proxy.port}/0", name=queue_name, health_check_interval=0.5
        ) as queue:
            job = await queue.enqueue(jobs.record, run, 1.5)
            waiting = anyio.Event()

            async def freeze_once_watched() -> None:
                await job.status()  # after the watch on the same connection
                assert proxy.freeze() >= 2  # results and calls: no byte, no FIN, no reset
                waiting.set()

            async with running(worker), anyio.create_task_group() as tg:
                tg.start_soon(freeze_once_watched)
                # the job ends ~1.5 s later; the old link would never say so
                assert await job.result(timeout=15) > 0
            assert waiting.is_set()
            assert queue.waiter.subscriber is not None
            assert queue.waiter.subscriber.connections == 2
    finally:
        await proxy.close()
