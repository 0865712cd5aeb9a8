"""Redis connections: built from a URL with timeouts, errors mapped to ours."""

from __future__ import annotations

import os
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from aioqueue._redis.errors import redact
from aioqueue._redis.sentinel import connect_sentinel, is_sentinel_url
from aioqueue.errors import ConfigurationError

DEFAULT_URL = "redis://localhost:6379/0"
URL_ENV = "AIOQUEUE_REDIS_URL"


def default_url() -> str:
    """``AIOQUEUE_REDIS_URL`` when set (as the CLI reads it), else the local default."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


# What a queue or worker talks to: one Redis (or the primary Sentinel names), or a cluster.
RedisClient: TypeAlias = Redis | RedisCluster


def connect(
    url: str,
    *,
    connect_timeout: float = 5.0,
    max_connections: int | None = None,
    blocking: bool = False,
    **kwargs: Any,
) -> Redis:
    """A client for ``url`` (redis://, rediss://, unix://, redis+sentinel://).

    No per-read socket timeout: redis-py arms one around every read, which here
    cost more than the command itself on a fast link. Every call aioqueue makes
    is bounded by a deadline of its caller instead (see ``Scripts``), and a
    stalled connection is closed (see ``Lane``), so a stalled Redis never hangs a caller.

    blocking: with ``max_connections``, a caller that finds every connection of
    the pool in use waits for one (its own deadline bounds the wait) instead of
    failing with "Too many connections".
    """
    if is_sentinel_url(url):
        return connect_sentinel(
            url, connect_timeout=connect_timeout, max_connections=max_connections, **kwargs
        )
    if blocking and max_connections is not None:
        pool = BlockingConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=None,
            health_check_interval=0,
            max_connections=max_connections,
            timeout=None,
            **kwargs,
        )
        return Redis.from_pool(pool)
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

    URL forms (see ``aioqueue._redis.cluster`` and ``aioqueue._redis.sentinel``):
    ``redis://``, ``rediss://``, ``unix://``;
    ``redis+cluster://host:port[,host:port...]``;
    ``redis+sentinel://host:port[,host:port...]/service[/db]``.
    """
    from aioqueue._redis.cluster import connect_cluster, is_cluster_url

    try:
        if is_cluster_url(url):
            return connect_cluster(url, connect_timeout=connect_timeout, **kwargs)
        return connect(url, connect_timeout=connect_timeout, **kwargs)
    except (ValueError, TypeError) as exc:  # redis-py's word for a URL it cannot use
        raise ConfigurationError(f"cannot use Redis URL {redact(url)}: {exc}") from None
