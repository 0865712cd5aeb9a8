"""Redis connections: built from a URL with timeouts, errors mapped to ours."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioqueue.errors import RedisUnavailable

DEFAULT_URL = "redis://localhost:6379/0"


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and CLI output."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def connect(
    url: str,
    *,
    connect_timeout: float = 5.0,
    command_timeout: float | None = 10.0,
    max_connections: int = 64,
    **kwargs: Any,
) -> Redis:
    """A client for ``url`` (redis://, rediss://, unix://) that never waits forever.

    command_timeout None is for connections that block (BLPOP, pub/sub). When all
    ``max_connections`` are busy, callers wait for one (up to connect_timeout)
    rather than fail: thousands of concurrent awaits share a bounded pool.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=connect_timeout,
        socket_connect_timeout=connect_timeout,
        socket_timeout=command_timeout,
        health_check_interval=0,
        **kwargs,
    )
    return Redis.from_pool(pool)


UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


@contextlib.contextmanager
def mapped_errors(url: str) -> Iterator[None]:
    """Turns redis-py's connection failures into ``RedisUnavailable``."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} is unavailable: {exc}") from exc
