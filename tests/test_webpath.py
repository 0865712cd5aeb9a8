"""One shared Queue under a web app's load: many concurrent callers, a few connections."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.abc
import pytest
import redis.asyncio as aioredis

from aioqueue import Job, Queue
from tests import tasks
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def tcp_server() -> Iterator[RedisServer]:
    """Queues connect over TCP, workers and the test's admin client over the unix
    socket: CLIENT LIST tells the Queue's connections apart by their address."""
    server = RedisServer(port=free_port())
    server.start()
    yield server
    server.cleanup()


async def queue_connections(admin: aioredis.Redis) -> int:
    return sum(1 for c in await admin.client_list() if c["addr"].startswith("127.0.0.1:"))


async def test_thousands_of_concurrent_calls_on_one_queue_hold_its_connection_bound(
    tcp_server: RedisServer,
    queue_name: str,
    spawn_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    # warnings only: nobody reads its output pipe during the run
    spawn_worker(env={"AIOQUEUE_REDIS_URL": tcp_server.url, "AIOQUEUE_LOG_LEVEL": "warning"})
    admin = aioredis.from_url(tcp_server.url)
    errors: list[BaseException] = []
    results: list[int] = []
    most = 0
    try:
        async with Queue(tcp_server.tcp_url, name=queue_name, max_connections=4) as queue:
            first = await queue.enqueue(tasks.add, 0, 0)
            assert await first.result(timeout=30) == 0  # the worker is up

            async def enqueue_and_await(i: int) -> None:
                try:
                    job = await queue.enqueue(tasks.add, i, 1)
                    results.append(await job.result(timeout=60))
                except Exception as exc:
                    errors.append(exc)

            async def read(job: Job[int], i: int) -> None:
                try:
                    if i % 2:
                        await job.status()
                    else:
                        await job.info()
                except Exception as exc:
                    errors.append(exc)

            async def sample(
                scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
            ) -> None:
                nonlocal most
                with scope:
                    most = await queue_connections(admin)
                    task_status.started()
                    while True:  # a measurement, not a wait for anything
                        await anyio.sleep(0.005)
                        most = max(most, await queue_connections(admin))

            sampling = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                await tg.start(sample, sampling)
                async with anyio.create_task_group() as calls:
                    for i in range(2000):
                        calls.start_soon(enqueue_and_await, i)
                    for i in range(500):
                        calls.start_soon(read, first, i)
                sampling.cancel()
            assert await queue_connections(admin) <= 4
    finally:
        await admin.aclose()
    assert errors == []
    assert sorted(results) == list(range(1, 2001))
    assert 0 < most <= 4


async def test_a_queue_opens_no_more_connections_than_configured_for_any_load(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(redis_url, name=queue_name, max_connections=2) as queue:
        lane = queue.scripts.lane
        assert lane is not None and lane.max_links == 1  # one more carries results

        async def enqueue(i: int) -> Any:
            return await queue.enqueue(tasks.add, i, i)

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(enqueue, i)
        assert lane.links_opened == 1
