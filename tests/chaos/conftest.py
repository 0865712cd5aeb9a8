"""Fixtures shared by the chaos scenarios."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.redis_server import RedisServer, free_port
from tests.supervised import Supervised


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("asyncio", {"use_uvloop": True})  # one loop is enough for chaos: it is slow


@pytest.fixture
async def tcp_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer(appendonly=True, port=free_port())
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def supervise(redis_url: str, queue_name: str) -> Iterator[Callable[..., Supervised]]:
    """Starts `python -m aioqueue run <target> ARGS` (the real supervisor) on this test's
    queue; every one started is stopped (and its children killed) at the end."""
    started: list[Supervised] = []

    def start(
        *args: str,
        url: str = redis_url,
        target: str = "tests.chaos.jobs:worker",
        **kwargs: Any,
    ) -> Supervised:
        sup = Supervised(args, redis_url=url, queue=queue_name, target=target, **kwargs)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()
