"""Redis Sentinel: a client that always talks to the primary the sentinels name.

URL: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?options]``
(``rediss+sentinel://`` for TLS to the data nodes). The hosts are sentinels;
``service`` is the name they monitor (``sentinel monitor <service> ...``).
``user:password`` authenticate to the data nodes; the ``sentinel_password``
(and ``sentinel_username``) options to the sentinels themselves.

redis-py asks the sentinels for the primary whenever it opens a connection,
so after a failover the next connection goes to the new primary; a connection
still open to a demoted primary fails its next write (READONLY) and is
dropped. Callers see ``RedisUnavailable`` meanwhile and retry with backoff,
as they do when a single Redis restarts; the Functions library is replicated
with the data, and reloaded on "Function not found" anyway.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from aioqueue._redis.urls import split_multi_host
from aioqueue.errors import ConfigurationError

__all__ = ["connect_sentinel", "is_sentinel_url"]

SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_SENTINEL_OPTIONS = {"sentinel_password", "sentinel_username"}


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_sentinel_url(
    url: str,
) -> tuple[list[tuple[str, int]], str, dict[str, Any], dict[str, Any]]:
    """(sentinels, service, options for data nodes, options for sentinels)."""
    parsed = split_multi_host(url, SCHEMES, "sentinel")
    parts, sentinels = parsed.parts, parsed.hosts
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigurationError("sentinel URL path must be /<service> or /<service>/<db>")
    options: dict[str, Any] = {"db": int(path[1]) if len(path) == 2 else 0, **parsed.auth}
    sentinel_options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query):
        if name in _SENTINEL_OPTIONS:
            sentinel_options[name.removeprefix("sentinel_")] = value
        elif name == "socket_connect_timeout":
            options[name] = float(value)
        else:
            raise ConfigurationError(f"unknown sentinel URL option {name!r}")
    return sentinels, unquote(path[0]), options, sentinel_options


def connect_sentinel(
    url: str, *, connect_timeout: float = 5.0, max_connections: int | None = None, **kwargs: Any
) -> Redis:
    """A client of the service's current primary; no per-read socket timeout."""
    sentinels, service, options, sentinel_options = parse_sentinel_url(url)
    options.setdefault("socket_connect_timeout", connect_timeout)
    manager = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
        sentinels,
        sentinel_kwargs={"socket_connect_timeout": connect_timeout, **sentinel_options},
    )
    if max_connections is not None:
        options["max_connections"] = max_connections
    client: Redis = manager.master_for(
        service,
        redis_class=Redis,
        socket_timeout=None,
        health_check_interval=0,
        **options,
        **kwargs,
    )
    return client
