"""Redis connections: built from a URL with timeouts, errors mapped to ours."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioqueue.errors import (
    AioqueueError,
    ConfigurationError,
    RedisOutOfMemory,
    RedisRefused,
    RedisUnavailable,
)
from aioqueue.sentinel import connect_sentinel, is_sentinel_url

DEFAULT_URL = "redis://localhost:6379/0"
URL_ENV = "AIOQUEUE_REDIS_URL"


def default_url() -> str:
    """``AIOQUEUE_REDIS_URL`` when set (as the CLI reads it), else the local default."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


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

    URL forms (see ``aioqueue.cluster`` and ``aioqueue.sentinel``):
    ``redis://``, ``rediss://``, ``unix://``;
    ``redis+cluster://host:port[,host:port...]``;
    ``redis+sentinel://host:port[,host:port...]/service[/db]``.
    """
    from aioqueue.cluster import connect_cluster, is_cluster_url

    try:
        if is_cluster_url(url):
            return connect_cluster(url, connect_timeout=connect_timeout, **kwargs)
        return connect(url, connect_timeout=connect_timeout, **kwargs)
    except (ValueError, TypeError) as exc:  # redis-py's word for a URL it cannot use
        raise ConfigurationError(f"cannot use Redis URL {redact(url)}: {exc}") from None


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


def unavailable(
    url: str | None, exc: BaseException, timeout: float | None = None
) -> RedisUnavailable:
    """The error for a connection failure, or for a deadline (``timeout``) that passed."""
    if isinstance(exc, RedisUnavailable):
        return exc
    where = "Redis" if url is None else f"Redis at {redact(url)}"
    # a deadline (anyio's, asyncio's) is a TimeoutError, an OSError without a message
    if isinstance(exc, TimeoutError) and not str(exc):
        within = f" within {timeout:g}s" if timeout is not None else " in time"
        return RedisUnavailable(f"{where} did not answer{within}")
    return RedisUnavailable(f"{where} is unavailable: {str(exc) or type(exc).__name__}")


def refusal(exc: ResponseError, what: str = "") -> AioqueueError:
    """Our error for an error reply of Redis (an ACL, a wrong-typed key, a script)."""
    doing = f" {what}" if what else ""
    if isinstance(exc, OutOfMemoryError):
        return RedisOutOfMemory(f"Redis refused{doing}: {exc}")
    if isinstance(exc, RedisRefused):
        return exc
    message = str(exc)
    first = message.split(" ", 1)[0]
    code = first if first.isupper() and first.isalpha() else ""
    if isinstance(exc, NoPermissionError):  # redis-py dropped the word from the text
        code = "NOPERM"
        message = f"NOPERM {message}"
    return RedisRefused(f"Redis refused{doing}: {message}", code=code)


@contextlib.contextmanager
def mapped_errors(url: str, timeout: float | None = None) -> Iterator[None]:
    """Turns redis-py's connection failures into ``RedisUnavailable`` (a deadline
    of ``timeout`` seconds that passed too, saying so) and its error replies
    into ``RedisRefused``."""
    try:
        yield
    except AioqueueError:
        raise
    except UNAVAILABLE as exc:
        raise unavailable(url, exc, timeout) from exc
    except ResponseError as exc:
        raise refusal(exc) from exc
