"""Every key the Functions write for a queue carries the queue's hash tag.

The library passes only KEYS[1], the queue's prefix, and derives every other key
from it (see the header of lua/header.lua and docs/how-it-works.md): that is
sound on a Redis Cluster only while each derived key hashes to the prefix's
slot. Keyspace notifications name every key written, whatever the command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import JobAborted, JobFailed, Queue, Worker, task
from aioqueue._protocol.functions import VERSION
from aioqueue._protocol.keys import library_prefix, queue_prefix
from aioqueue.admin import Admin
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio


@task(unique=True)
async def locked(n: int) -> int:
    return n


@pytest.fixture
async def keyspace(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    before = (await client.config_get("notify-keyspace-events"))["notify-keyspace-events"]
    await client.config_set("notify-keyspace-events", "KEA")
    try:
        yield client
    finally:
        await client.config_set("notify-keyspace-events", before)
        await client.aclose()


async def test_a_round_trip_writes_only_keys_in_the_queue_slot(
    redis_url: str, queue_name: str, keyspace: aioredis.Redis
) -> None:
    prefix = queue_prefix(queue_name)
    written: set[bytes] = set()
    end = f"{prefix}test-end".encode()
    async with keyspace.pubsub() as pubsub:
        await pubsub.psubscribe("__keyevent@*__:*")

        async def listen(done: anyio.Event) -> None:
            async for msg in pubsub.listen():
                if msg["type"] == "pmessage":
                    written.add(msg["data"])
                    if msg["data"] == end:
                        done.set()
                        return

        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen, done)
            worker = Worker(
                [tasks.add, tasks.flaky, tasks.boom, locked],
                redis_url=redis_url,
                queues=[queue_name],
            )
            async with Queue(redis_url, name=queue_name) as queue, running(worker):
                assert await (await queue.enqueue(tasks.add, 1, 2)).result(timeout=5) == 3
                assert await (await queue.enqueue(tasks.flaky, 1)).result(timeout=5) == 2
                jobs = [await queue.enqueue(locked, i) for i in range(3)]
                assert [await j.result(timeout=5) for j in jobs] == [0, 1, 2]
                dead = await queue.enqueue(tasks.boom, "no")
                with pytest.raises(JobFailed):
                    await dead.result(timeout=5)
                later = await queue.enqueue(tasks.add.options(delay=60), 1, 1)
                assert await later.abort()
                with pytest.raises(JobAborted):
                    await later.result(timeout=5)
                async with Admin(redis_url) as admin:
                    assert await admin.requeue(queue_name, [dead.id]) == 1
                    with pytest.raises(JobFailed):
                        await dead.result(timeout=5)
                    assert await admin.purge(queue_name, [dead.id]) == 1
            await keyspace.set(end, 1)  # after everything above, in order
            with anyio.fail_after(10):
                await done.wait()
            tg.cancel_scope.cancel()
    mine = {k.decode() for k in written if queue_name.encode() in k or VERSION.encode() in k}
    mine.discard(end.decode())
    # the library's registry of its workers has its own slot (see versions.py)
    stray = {k for k in mine if not k.startswith((prefix, library_prefix(VERSION)))}
    assert stray == set()
    # and the round trip did write what it should have: job hashes, locks, the lists
    suffixes = {k.removeprefix(prefix).split(":", 1)[0] for k in mine if k.startswith(prefix)}
    assert {"j", "ready", "active", "sched", "dead", "stats", "events", "lock", "meta"} <= suffixes
    assert {"workers", "winfo", "wake", "seq"} <= suffixes
