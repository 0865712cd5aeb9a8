"""The pytest fixtures of aioqueue.testing (enabled with ``pytest_plugins = ["aioqueue.testing"]``).

Names start with ``aioqueue_`` so they never shadow a project's own fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from aioqueue._client.queue import Queue
from aioqueue.task import DEFAULT_QUEUE
from aioqueue.testing._clock import TestClock
from aioqueue.testing._env import Environment, current, install_library, set_current
from aioqueue.testing._server import PrivateRedis, RedisServerMissing


@pytest.fixture(scope="session")
def aioqueue_redis_server() -> Iterator[PrivateRedis]:
    """A redis-server of this test session's own (unix socket, no persistence)."""
    try:
        server = PrivateRedis()
    except RedisServerMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        with redis.Redis.from_url(server.url) as client:
            install_library(client)
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def aioqueue_redis_url(aioqueue_redis_server: PrivateRedis) -> Iterator[str]:
    """The private Redis, its database emptied for this test, on a fresh test clock."""
    env = Environment.prepare(aioqueue_redis_server.url)
    set_current(env)
    try:
        yield aioqueue_redis_server.url
    finally:
        set_current(None)
        env.close()


@pytest.fixture
def aioqueue_clock(aioqueue_redis_url: str) -> TestClock:
    """The test clock: it reads the wall clock's time at the start of the test and
    moves only with ``await aioqueue_clock.advance(...)``."""
    return TestClock(current())


@pytest.fixture
def aioqueue_queue_name() -> str:
    """The queue ``aioqueue_queue`` enqueues to; override it to match your worker's."""
    return DEFAULT_QUEUE


@pytest.fixture
async def aioqueue_queue(aioqueue_redis_url: str, aioqueue_queue_name: str) -> AsyncIterator[Queue]:
    """A ``Queue`` on the private Redis (every test starts with an empty database)."""
    async with Queue(aioqueue_redis_url, name=aioqueue_queue_name) as queue:
        yield queue
