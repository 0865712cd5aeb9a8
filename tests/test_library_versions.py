"""Old Functions library versions: kept while a live worker runs them, deleted after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import ConfigurationError, Queue, Worker
from aioqueue._protocol import source, versions
from aioqueue._protocol.functions import VERSION, Scripts
from aioqueue._protocol.keys import LAYOUT, QueueKeys, library_prefix
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio

OLD = "0ld0ld0ld0"  # the version of a library "an earlier release" loaded
# the production text with one part changed, under its own name: an older release
OLD_LIBRARY = source.assemble(
    dict(source.read_parts(), claim=source.read_parts()["claim"] + "\n-- older\n")
).replace("__VERSION__", OLD)
FAKE_TESTING = (
    "#!lua name=aioqueue_testing_zz\nredis.register_function('aqt_zz_x', function() return 1 end)"
)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    await c.delete(library_prefix(OLD) + "workers")
    try:
        yield c
    finally:
        await c.delete(library_prefix(OLD) + "workers")
        await c.function_delete(f"aioqueue_{OLD}") if await names(c, OLD) else None
        await c.function_delete("aioqueue_testing_zz") if await names(c, "testing_zz") else None
        await c.aclose()


async def names(c: aioredis.Redis, part: str = "") -> list[str]:
    found = versions.library_names(
        await c.execute_command("FUNCTION", "LIST", "LIBRARYNAME", "aioqueue_*")
    )
    return [n for n in found if part in n]


async def old_worker(c: aioredis.Redis, worker: str, leaving: bool) -> None:
    """What a worker of the old release does with each heartbeat (or at its end)."""
    await c.fcall(
        f"aq_{OLD}_library_beat", 1, library_prefix(OLD), 0, worker, "1" if leaving else "0"
    )


async def test_an_old_library_stays_while_its_worker_lives_and_goes_after(
    redis_url: str, queue_name: str, client: aioredis.Redis
) -> None:
    await client.function_load(OLD_LIBRARY)
    await client.function_load(FAKE_TESTING)
    await old_worker(client, "old-1", leaving=False)
    worker = Worker([tasks.add], redis_url=redis_url, queues=[queue_name])
    async with Queue(redis_url, name=queue_name) as queue:
        async with running(worker):
            assert await (await queue.enqueue(tasks.add, 1, 2)).result(timeout=5) == 3
            with anyio.fail_after(5):  # its first heartbeat registers its version
                while await client.zscore(library_prefix(VERSION) + "workers", worker.id) is None:
                    await anyio.sleep(0.01)
        # a live worker runs the old version: a new worker's start kept it
        assert await names(client, OLD) == [f"aioqueue_{OLD}"]
        # the new worker registered its own version while it ran, and left at its end
        # (other tests' workers may still be registered on this shared Redis)
        assert await client.zscore(library_prefix(VERSION) + "workers", worker.id) is None
        await old_worker(client, "old-1", leaving=True)
        async with running(worker):
            assert await (await queue.enqueue(tasks.add, 2, 2)).result(timeout=5) == 4
    # nobody runs it now: the next start deleted it; never the current one, nor a testing build
    assert await names(client, OLD) == []
    assert f"aioqueue_{VERSION}" in await names(client)
    assert await names(client, "testing_zz") == ["aioqueue_testing_zz"]


async def test_a_worker_that_stopped_beating_no_longer_keeps_its_version(
    redis_url: str, client: aioredis.Redis
) -> None:
    await client.function_load(OLD_LIBRARY)
    await old_worker(client, "old-2", leaving=False)
    # its last beat is older than LIBRARY_TTL: it died without deregistering
    await client.zadd(library_prefix(OLD) + "workers", {"old-2": 1})
    scripts = Scripts(client)
    assert await versions.collect(scripts) == [f"aioqueue_{OLD}"]
    assert await names(client, OLD) == []
    await scripts.aclose()


async def test_a_client_whose_library_was_deleted_loads_it_again(
    redis_url: str, queue_name: str, client: aioredis.Redis
) -> None:
    async with Queue(redis_url, name=queue_name) as queue:
        await queue.enqueue(tasks.add, 1, 1)
        await client.function_delete(f"aioqueue_{VERSION}")  # another worker's cleanup, say
        await queue.enqueue(tasks.add, 1, 1)
    assert f"aioqueue_{VERSION}" in await names(client)


async def test_enqueue_records_the_layout_and_a_worker_refuses_a_newer_one(
    redis_url: str, queue_name: str, client: aioredis.Redis
) -> None:
    meta = QueueKeys(queue_name).meta
    async with Queue(redis_url, name=queue_name) as queue:
        await queue.enqueue(tasks.add, 1, 1)
        assert await client.hget(meta, "layout") == str(LAYOUT).encode()
        await client.hset(meta, "layout", LAYOUT + 1)  # a later release stored it
        await queue.enqueue(tasks.add, 1, 1)  # an enqueue never rewrites it
    assert await client.hget(meta, "layout") == str(LAYOUT + 1).encode()
    worker = Worker([tasks.add], redis_url=redis_url, queues=["other-" + queue_name, queue_name])
    with anyio.fail_after(10), pytest.raises(ConfigurationError, match="newer than this"):
        await worker.run()
    # nothing was claimed from it
    assert await client.llen(QueueKeys(queue_name).ready) == 2
