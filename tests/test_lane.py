"""The shared command path: replies never cross calls, few connections carry many
callers, merged calls split their reply, lost links are retried where that is safe."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from aioqueue._redis.connect import connect
from aioqueue._redis.lane import MERGE_LIMIT, Lane, MergedFailure
from tests.chaos.proxy import ChaosProxy
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def lane(redis_url: str) -> AsyncIterator[Lane]:
    redis = connect(redis_url)
    lane = Lane(redis, max_links=2)
    yield lane
    await lane.aclose()
    await redis.aclose()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def calls(admin: aioredis.Redis, command: str) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def blocked_client(admin: aioredis.Redis) -> int:
    """The id of the client blocked in BLPOP (waits until there is one)."""
    with anyio.fail_after(5):
        while True:
            for client in await admin.client_list():
                if client.get("cmd") == "blpop" and "b" in client.get("flags", ""):
                    return int(client["id"])
            await anyio.sleep(0.01)  # CLIENT LIST is the only way to see it: no event


def key() -> str:
    return f"lane:{secrets.token_hex(4)}"


async def test_a_cancelled_call_never_leaves_its_reply_for_the_next(lane: Lane) -> None:
    with anyio.move_on_after(0.1) as scope:
        await lane.call("BLPOP", key(), 0.3)  # its reply (nil) comes after the cancel
    assert scope.cancelled_caught
    assert await lane.call("ECHO", "after") == b"after"
    assert lane.links_opened == 1  # the connection stayed: replies are matched in order


async def test_a_refusal_raises_and_keeps_the_connection(lane: Lane) -> None:
    k = key()
    await lane.call("SET", k, "not a list")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await lane.call("LPUSH", k, "x")
    assert await lane.call("GET", k) == b"not a list"
    assert lane.links_opened == 1


async def test_a_killed_idle_connection_is_replaced_and_the_call_goes_through(
    lane: Lane, admin: aioredis.Redis
) -> None:
    first = await lane.call("CLIENT", "ID")
    assert await admin.execute_command("CLIENT", "KILL", "ID", first) == 1
    assert await lane.call("CLIENT", "ID") != first
    assert lane.links_opened == 2


async def test_a_call_cut_in_flight_is_sent_again_only_when_idempotent(
    lane: Lane, admin: aioredis.Redis
) -> None:
    k = key()
    async with anyio.create_task_group() as tg:
        result: list[object] = []

        async def pop() -> None:
            result.append(await lane.call("BLPOP", k, 5))

        tg.start_soon(pop)
        await admin.execute_command("CLIENT", "KILL", "ID", await blocked_client(admin))
        await blocked_client(admin)  # sent again on a fresh connection
        await admin.rpush(k, "v")
    assert result == [[k.encode(), b"v"]]

    async with anyio.create_task_group() as tg:
        failed: list[BaseException] = []

        async def pop_once() -> None:
            try:
                await lane.call("BLPOP", k, 5, idempotent=False)
            except RedisConnectionError as exc:
                failed.append(exc)

        tg.start_soon(pop_once)
        await admin.execute_command("CLIENT", "KILL", "ID", await blocked_client(admin))
    assert len(failed) == 1


async def test_a_transport_closed_under_the_connection_is_a_dropped_link(lane: Lane) -> None:
    # uvloop raises RuntimeError on a write to a closed transport (asyncio drops it):
    # either way the call must go through on a fresh connection
    first = await lane.call("CLIENT", "ID")
    (conn,) = lane._conns
    assert conn.link is not None
    conn.link.transport.close()
    assert await lane.call("CLIENT", "ID") != first


async def test_thousands_of_concurrent_callers_share_the_bounded_connections(
    lane: Lane,
) -> None:
    k = key()
    replies: list[int] = []

    async def incr() -> None:
        replies.append(await lane.call("INCR", k))

    async with anyio.create_task_group() as tg:
        for _ in range(3000):
            tg.start_soon(incr)
    assert sorted(replies) == list(range(1, 3001))
    assert lane.links_opened <= lane.max_links == 2


async def test_concurrent_merged_calls_become_one_command_each_getting_its_slice(
    lane: Lane, admin: aioredis.Redis
) -> None:
    keys = [key() for _ in range(2 * MERGE_LIMIT + 10)]
    for i, k in enumerate(keys):
        await admin.set(k, i)
    before = await calls(admin, "mget")
    got: dict[str, bytes] = {}

    async def get(k: str) -> None:
        got[k] = await lane.call_merged("mget", ("MGET",), (k,))

    async with anyio.create_task_group() as tg:
        for k in keys:
            tg.start_soon(get, k)
    assert got == {k: str(i).encode() for i, k in enumerate(keys)}
    assert await calls(admin, "mget") - before == 3  # MERGE_LIMIT items per command


async def test_a_failed_merged_call_tells_each_caller_it_was_merged(
    lane: Lane, admin: aioredis.Redis
) -> None:
    k = key()
    await admin.set(k, "not a list")
    errors: list[BaseException] = []

    async def push(v: str) -> None:
        try:
            await lane.call_merged("push", ("RPUSH", k), (v,))
        except (MergedFailure, ResponseError) as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for v in "abc":
            tg.start_soon(push, v)
    assert [type(e) for e in errors] == [MergedFailure] * 3
    assert all("WRONGTYPE" in str(e) for e in errors)
    await push("alone")
    assert type(errors[-1]) is ResponseError  # not merged: Redis's own error


async def test_calls_fail_soon_when_nothing_listens() -> None:
    redis = connect(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    lane = Lane(redis)
    try:
        with anyio.fail_after(5), pytest.raises(RedisConnectionError):
            await lane.call("PING")
    finally:
        await lane.aclose()
        await redis.aclose()


async def test_a_connection_that_goes_silent_is_replaced_by_the_stall_watchdog() -> None:
    server = RedisServer(port=free_port())
    server.start()
    proxy = ChaosProxy(server.port)
    await proxy.start()
    redis = connect(f"redis://127.0.0.1:{proxy.port}/0")
    lane = Lane(redis, stall_timeout=0.5)
    try:
        assert await lane.call("PING") == b"PONG"
        assert proxy.freeze() == 1  # no FIN, no reset: the bytes just stop
        with anyio.fail_after(10):
            assert await lane.call("PING") == b"PONG"
        assert lane.links_opened == 2
    finally:
        await lane.aclose()
        await redis.aclose()
        await proxy.close()
        server.cleanup()
