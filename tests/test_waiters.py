"""Result waits end one way or another, and leave nothing behind: a watch costs the
same however many clients wait, a client that gave up is forgotten, garbage on the
result channel is ignored, a closed Queue ends its awaits, a short stall is ridden out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import Queue, QueueClosed, ResultTimeout, Worker
from aioqueue._protocol.keys import QueueKeys, client_channel
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def worker_for(url: str, queue: str) -> Worker:
    return Worker([tasks.add, tasks.sleepy], redis_url=url, queues=[queue])


async def publishes(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


async def test_many_waiting_clients_do_not_make_a_watch_cost_more(
    queue: Queue, admin: aioredis.Redis, queue_name: str
) -> None:
    job = await queue.enqueue(tasks.add, 1, 2)  # no worker: it stays queued
    key = QueueKeys(queue_name).job(job.id)
    for i in range(0, 3000, 50):
        async with anyio.create_task_group() as tg:
            for client in range(i, i + 50):
                tg.start_soon(queue.scripts.watch, queue_name, job.id, f"c{client}")
    # the count, not a list of 3,000 ids that every watch searched and rewrote
    assert await admin.hget(key, "wt") == b"3000"
    assert await admin.hexists(key, "wt:c2999")


async def test_a_client_that_stopped_waiting_is_forgotten_and_not_published_to(
    redis_url: str, queue_name: str, admin: aioredis.Redis
) -> None:
    async with Queue(redis_url, name=queue_name) as gave_up, Queue(redis_url, name=queue_name) as q:
        job = await q.enqueue(tasks.add, 2, 3)
        with pytest.raises(ResultTimeout):
            await gave_up.job(job.id).result(timeout=0.2)
        await gave_up.waiter.settled()
        key = QueueKeys(queue_name).job(job.id)
        assert await admin.hget(key, "wt") is None
        assert not await admin.hexists(key, f"wt:{gave_up.waiter.client_id}")
        before = await publishes(admin)
        async with running(worker_for(redis_url, queue_name)):
            assert await job.result(timeout=5) == 5
        assert await publishes(admin) - before == 1  # to the one client still waiting


async def test_garbage_on_the_result_channel_is_ignored(
    queue: Queue, admin: aioredis.Redis, redis_url: str, queue_name: str
) -> None:
    channel = client_channel(queue.waiter.client_id)
    job = await queue.enqueue(tasks.add, 20, 22)
    for junk in (
        b"\xff\xfe\0\xff\0complete\0x",  # not UTF-8
        queue_name.encode() + b"\0" + job.id.encode() + b"\0queued\0",  # not an end
        b"no separators at all",
    ):
        assert await admin.publish(channel, junk) == 1
    async with running(worker_for(redis_url, queue_name)):
        assert await job.result(timeout=5) == 42  # the waiter (and this block) lived on


async def test_closing_the_queue_ends_every_pending_await(redis_url: str, queue_name: str) -> None:
    failed: list[BaseException] = []

    async def wait(job_id: str, q: Queue) -> None:
        try:
            await q.job(job_id).result()
        except QueueClosed as exc:
            failed.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with Queue(redis_url, name=queue_name) as q:
                jobs = [await q.enqueue(tasks.add, i, i) for i in range(3)]
                for job in jobs:
                    tg.start_soon(wait, job.id, q)
                await anyio.wait_all_tasks_blocked()
    assert sorted(str(getattr(e, "job_id", "")) for e in failed) == sorted(j.id for j in jobs)
    with pytest.raises(QueueClosed):
        await jobs[0]


async def test_an_await_rides_out_a_redis_stall_longer_than_the_call_timeout(
    redis_url: str, queue_name: str, admin: aioredis.Redis
) -> None:
    async with Queue(redis_url, name=queue_name, timeout=0.3) as q:
        async with running(worker_for(redis_url, queue_name)):
            job = await q.enqueue(tasks.add.options(delay=0.5), 1, 1)
            # every command waits 1.2 s: the await's watch times out (0.3 s) and again
            await admin.execute_command("CLIENT", "PAUSE", 1200, "ALL")
            assert await job.result(timeout=20) == 2


async def test_queue_without_url_reads_the_environment(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOQUEUE_REDIS_URL", redis_url)
    async with Queue(name=queue_name) as q:
        assert q.url == redis_url
        job = await q.enqueue(tasks.add, 1, 2)
        assert await job.status() == "queued"


async def test_many_awaits_of_one_job_register_the_client_once(
    queue: Queue, admin: aioredis.Redis, queue_name: str
) -> None:
    job = await queue.enqueue(tasks.add, 1, 2)
    key = QueueKeys(queue_name).job(job.id)
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(lambda: job.result(timeout=5))
        await anyio.wait_all_tasks_blocked()
        await job.status()  # behind the watches on the Queue's connection: they ran
        assert await admin.hget(key, "wt") == b"1"
        tg.cancel_scope.cancel()
    await queue.waiter.settled()
    assert await admin.hget(key, "wt") is None  # all gave up: forgotten


@pytest.mark.parametrize("protocol", [2, 3])
async def test_an_idle_result_link_answers_its_health_checks_and_is_kept(
    redis_url: str, protocol: int
) -> None:
    # redis-py 8 speaks RESP3, where a subscribed connection answers PING with a plain
    # PONG: the subscriber took that for silence and reopened its link every 6 s
    from aioqueue._client.subscriber import Subscriber

    redis = aioredis.from_url(redis_url, protocol=protocol)
    sub = Subscriber(redis, on_message=lambda data: None, health_interval=0.1)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(sub.run)
            await sub.subscribe("aq:client:health-check")
            with anyio.fail_after(30):
                while sub.pongs < 5:  # each one sent after 0.1 s of quiet
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    finally:
        await redis.aclose()
    assert sub.connections == 1
