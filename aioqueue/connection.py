"""Redis connections: built from a URL with timeouts, errors mapped to ours."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis
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
    max_connections: int | None = None,
    **kwargs: Any,
) -> Redis:
    """A client for ``url`` (redis://, rediss://, unix://).

    No per-read socket timeout: redis-py arms one around every read, which here
    cost more than the command itself on a fast link. Every call aioqueue makes
    is bounded by a deadline of its caller instead (see ``Scripts``), and a
    cancelled call drops its connection, so a stalled Redis never hangs a caller.
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=None,
        health_check_interval=0,
        max_connections=max_connections,
        **kwargs,
    )


UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, RedisUnavailable)


@contextlib.contextmanager
def mapped_errors(url: str) -> Iterator[None]:
    """Turns redis-py's connection failures into ``RedisUnavailable``."""
    try:
        yield
    except RedisUnavailable:
        raise
    except UNAVAILABLE as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} is unavailable: {exc}") from exc
