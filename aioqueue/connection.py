"""Redis connections: built from a URL with timeouts, errors mapped to ours."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioqueue.errors import RedisUnavailable
from aioqueue.sentinel import connect_sentinel, is_sentinel_url

DEFAULT_URL = "redis://localhost:6379/0"

# What a queue or worker talks to: one Redis (or the primary Sentinel names), or a cluster.
RedisClient: TypeAlias = Redis | RedisCluster


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
    """A client for ``url`` (redis://, rediss://, unix://, redis+sentinel://).

    No per-read socket timeout: redis-py arms one around every read, which here
    cost more than the command itself on a fast link. Every call aioqueue makes
    is bounded by a deadline of its caller instead (see ``Scripts``), and a
    cancelled call drops its connection, so a stalled Redis never hangs a caller.
    """
    if is_sentinel_url(url):
        return connect_sentinel(
            url, connect_timeout=connect_timeout, max_connections=max_connections, **kwargs
        )
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=None,
        health_check_interval=0,
        max_connections=max_connections,
        **kwargs,
    )


def connect_any(url: str, *, connect_timeout: float = 5.0, **kwargs: Any) -> RedisClient:
    """Like ``connect``, and a ``RedisCluster`` for ``redis+cluster://`` URLs.

    URL forms (see ``aioqueue.cluster`` and ``aioqueue.sentinel``):
    ``redis://``, ``rediss://``, ``unix://``;
    ``redis+cluster://host:port[,host:port...]``;
    ``redis+sentinel://host:port[,host:port...]/service[/db]``.
    """
    from aioqueue.cluster import connect_cluster, is_cluster_url

    if is_cluster_url(url):
        return connect_cluster(url, connect_timeout=connect_timeout, **kwargs)
    return connect(url, connect_timeout=connect_timeout, **kwargs)


# A cluster mid-failover answers CLUSTERDOWN / TRYAGAIN, or has a slot no node
# serves yet; one with no reachable node fails redis-py's set-up with a
# RedisClusterException: all "not now, retry", like a connection refused.
UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    RedisUnavailable,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterException,
)


@contextlib.contextmanager
def mapped_errors(url: str) -> Iterator[None]:
    """Turns redis-py's connection failures into ``RedisUnavailable``."""
    try:
        yield
    except RedisUnavailable:
        raise
    except UNAVAILABLE as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} is unavailable: {exc}") from exc
