"""The lean command path: replies never cross calls, refusals keep the link, drops retry."""

from __future__ import annotations

import secrets

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aioqueue.connection import connect
from aioqueue.lane import Lane

pytestmark = pytest.mark.anyio


async def test_a_cancelled_call_never_leaves_its_reply_for_the_next(redis_url: str) -> None:
    redis = connect(redis_url)
    other = aioredis.from_url(redis_url)
    key = f"lane:{secrets.token_hex(4)}"
    lane = Lane(redis)
    try:
        await lane.call("PING")
        (conn,) = lane._idle
        with anyio.move_on_after(0.2) as scope:
            await lane.call("BLPOP", key, 5)
        assert scope.cancelled_caught
        assert lane._idle == []  # the half-read link was not kept
        assert not conn.is_connected
        await other.rpush(key, "late")  # would have been the BLPOP's reply
        assert await lane.call("PING") == b"PONG"
        assert await other.lrange(key, 0, -1) == [b"late"]  # the dropped BLPOP took nothing
    finally:
        await other.aclose()
        await redis.aclose()


async def test_a_refusal_raises_and_keeps_the_connection(redis_url: str) -> None:
    redis = connect(redis_url)
    lane = Lane(redis)
    key = f"lane:{secrets.token_hex(4)}"
    try:
        await lane.call("SET", key, "not a list")
        (conn,) = lane._idle
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lane.call("LPUSH", key, "x")
        assert lane._idle == [conn]
        assert await lane.call("GET", key) == b"not a list"
    finally:
        await redis.aclose()


async def test_a_killed_connection_is_replaced_and_the_call_goes_through(redis_url: str) -> None:
    redis = connect(redis_url)
    admin = aioredis.from_url(redis_url)
    lane = Lane(redis)
    try:
        first = await lane.call("CLIENT", "ID")
        assert await admin.execute_command("CLIENT", "KILL", "ID", first) == 1
        assert await lane.call("CLIENT", "ID") != first  # a new connection answered
    finally:
        await admin.aclose()
        await redis.aclose()


async def test_a_transport_closed_under_the_connection_is_a_dropped_link(redis_url: str) -> None:
    # uvloop raises RuntimeError on a write to a closed transport (asyncio drops it):
    # either way the call must go through on a fresh connection
    redis = connect(redis_url)
    lane = Lane(redis)
    try:
        first = await lane.call("CLIENT", "ID")
        (conn,) = lane._idle
        conn._writer.transport.close()  # type: ignore[union-attr]
        assert await lane.call("CLIENT", "ID") != first
    finally:
        await redis.aclose()
