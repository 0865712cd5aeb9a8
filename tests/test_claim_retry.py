"""A claim sent again after its reply was lost hands back the same deliveries: no
job is left leased to a worker that never heard of it."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from aioqueue import Queue
from aioqueue._protocol.functions import Scripts
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.connect import connect
from tests import tasks
from tests.chaos.proxy import ChaosProxy
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


async def test_a_claim_whose_reply_was_lost_returns_the_same_deliveries(queue_name: str) -> None:
    server = RedisServer(port=free_port())
    server.start()
    proxy = ChaosProxy(server.port)
    await proxy.start()
    redis = connect(f"redis://127.0.0.1:{proxy.port}/0")
    scripts = Scripts(redis, timeout=10)
    admin = aioredis.from_url(server.url)
    keys = QueueKeys(queue_name)
    try:
        async with Queue(server.url, name=queue_name) as queue:
            for i in range(5):
                await queue.enqueue(tasks.add, i, i)
        assert scripts.lane is not None
        scripts.lane.stall_timeout = 0.3  # the lost reply is noticed soon
        await scripts.load()
        proxy.freeze(replies_only=True)  # the claim runs in Redis; its answer never comes
        claimed = (await scripts.claim(queue_name, 3, "w1", 30_000)).jobs
        assert scripts.lane.links_opened == 2  # sent again on a fresh connection
        active = {m.decode() for m in await admin.zrange(keys.active, 0, -1)}
        assert {c.id for c in claimed} == active and len(active) == 3
        for c in claimed:
            assert await admin.hget(keys.job(c.id), "k") == c.token.encode()
        assert await admin.llen(keys.ready) == 2  # the second send took nothing new
    finally:
        await scripts.aclose()
        await redis.aclose()
        await admin.aclose()
        await proxy.close()
        server.cleanup()


async def test_the_claim_after_one_that_failed_asks_for_its_deliveries_again(
    queue: Queue, queue_name: str, redis_url: str
) -> None:
    for i in range(4):
        await queue.enqueue(tasks.add, i, i)
    redis = connect(redis_url)
    scripts = Scripts(redis)
    try:
        scripts._claim_ids[queue_name] = "lost-claim"  # as left by a claim that raised
        first = (await scripts.claim(queue_name, 2, "w1", 30_000)).jobs
        scripts._claim_ids[queue_name] = "lost-claim"
        again = (await scripts.claim(queue_name, 2, "w1", 30_000)).jobs
        assert [(c.id, c.token, c.attempt) for c in again] == [
            (c.id, c.token, c.attempt) for c in first
        ]
        fresh = (await scripts.claim(queue_name, 2, "w1", 30_000)).jobs  # a new id: new jobs
        assert {c.id for c in fresh}.isdisjoint(c.id for c in first) and len(fresh) == 2
    finally:
        await scripts.aclose()
        await redis.aclose()
