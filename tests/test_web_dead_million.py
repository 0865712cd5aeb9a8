"""A million dead jobs page as fast as ten: the first page, a page deep in the set
and a search by id each cost a bounded number of Redis commands (counted with
INFO commandstats), none of which walks the set. The times are in
benchmarks/web_dead_pages.py; here only the structure is asserted.

Its own redis-server: the million records (~300 MB) go with it at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from aioqueue._protocol.keys import QueueKeys
from aioqueue.web import create_app
from tests.redis_server import RedisServer
from tests.web_helpers import command_counts, delta, load_dead

pytestmark = pytest.mark.anyio

N = 1_000_000
QUEUE = "shop"
PAGE = 50
# what a page of the dead set may ask: its size, the cursor's rank (or score), one
# range of ids, and one HMGET per row
PAGE_COMMANDS = {"zcard", "zrevrank", "zcount", "zrevrange", "hmget"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def big_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
async def loaded(big_redis: RedisServer) -> AsyncIterator[Redis]:
    redis = Redis.from_url(big_redis.url)
    await load_dead(redis, QUEUE, N)
    assert await redis.zcard(QueueKeys(QUEUE).dead) == N
    yield redis
    await redis.aclose()


@pytest.fixture(scope="module")
async def client(big_redis: RedisServer, loaded: Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(big_redis.url, queues=[QUEUE])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        await c.get("/api/jobs", params={"queue": QUEUE, "state": "dead", "limit": 1})  # warm
        yield c
    await app.state.aioqueue_dashboard.aclose()


async def counted(redis: Redis, client: httpx.AsyncClient, params: dict[str, Any]) -> Any:
    before = await command_counts(redis)
    answer = await client.get("/api/jobs", params={"queue": QUEUE, "state": "dead", **params})
    assert answer.status_code == 200
    return answer.json(), delta(before, await command_counts(redis))


async def test_first_page_of_a_million_dead_jobs_costs_one_range_and_a_read_per_row(
    loaded: Redis, client: httpx.AsyncClient
) -> None:
    page, calls = await counted(loaded, client, {"limit": PAGE})
    assert page["total"] == N
    assert [r["id"] for r in page["rows"]] == [f"dead-{N - 1 - i}" for i in range(PAGE)]
    assert page["rows"][0]["error_type"] == "shop.PaymentDeclined"
    assert calls == {"zcard": 1, "zrevrange": 1, "hmget": PAGE}


async def test_a_page_deep_in_the_set_costs_the_same(
    loaded: Redis, client: httpx.AsyncClient
) -> None:
    first, _ = await counted(loaded, client, {"limit": PAGE})
    # a cursor 900,000 jobs in: the job dead-99999 (its score and id)
    deep_score = first["rows"][0]["score_ms"] - (N - 1 - 99_999)
    page, calls = await counted(
        loaded, client, {"limit": PAGE, "cursor": f"{deep_score}.0:dead-99999"}
    )
    assert [r["id"] for r in page["rows"]] == [f"dead-{99_998 - i}" for i in range(PAGE)]
    assert set(calls) <= PAGE_COMMANDS
    assert calls["zrevrange"] == 1 and calls["hmget"] == PAGE and sum(calls.values()) <= PAGE + 4
    # the cursor's job gone (retried meanwhile): the page goes on from its score
    await loaded.zrem(QueueKeys(QUEUE).dead, "dead-99999")
    again, calls = await counted(
        loaded, client, {"limit": PAGE, "cursor": f"{deep_score}.0:dead-99999"}
    )
    assert [r["id"] for r in again["rows"]] == [r["id"] for r in page["rows"]]
    assert sum(calls.values()) <= PAGE + 4


async def test_search_by_id_among_a_million_is_one_read(
    loaded: Redis, client: httpx.AsyncClient
) -> None:
    found, calls = await counted(loaded, client, {"q": "dead-123456"})
    assert [r["id"] for r in found["exact"]] == ["dead-123456"]
    assert found["searched"] == 0 and found["rows"] == []
    assert calls == {"hmget": 1}


async def test_text_search_reads_a_bounded_window_and_says_where_to_go_on(
    loaded: Redis, client: httpx.AsyncClient
) -> None:
    from aioqueue._admin.pages import SEARCH_WINDOW

    found, calls = await counted(loaded, client, {"q": "declined"})
    assert found["searched"] == SEARCH_WINDOW and len(found["rows"]) == SEARCH_WINDOW
    assert found["next_cursor"] is not None
    assert calls["zrevrange"] == 1 and calls["hmget"] == SEARCH_WINDOW + 1  # +1: the id look-up
