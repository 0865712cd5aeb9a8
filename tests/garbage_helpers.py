"""Shared by the garbage tests: planting values of any type, reading them back, logs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from structlog.testing import capture_logs

from aioqueue._protocol import garbage
from aioqueue._worker import (
    cron_runner,
    executor,
    fetch,
    liveness,
    outcomes,
    runtime,
    stats,
    worker,
)

KINDS = ("string", "list", "hash", "set", "zset")


async def plant(redis: Redis, key: str, kind: str, items: list[bytes]) -> None:
    """Replaces ``key`` with a value of type ``kind`` made of ``items`` (at least one)."""
    await redis.delete(key)
    if kind == "string":
        await redis.set(key, b"".join(items))
    elif kind == "list":
        await redis.rpush(key, *items)
    elif kind == "hash":
        await redis.hset(key, mapping={item: item[::-1] for item in items})
    elif kind == "set":
        await redis.sadd(key, *items)
    elif kind == "zset":
        # scores in the distant past: a planted sched or active entry is due at once
        await redis.zadd(key, {item: i for i, item in enumerate(items)})
    else:
        raise ValueError(kind)


async def raw(redis: Redis, key: bytes | str) -> tuple[str, Any]:
    """The type and whole value of a key, comparable across a RENAME."""
    kind = (await redis.type(key)).decode()
    if kind == "string":
        return kind, await redis.get(key)
    if kind == "list":
        return kind, await redis.lrange(key, 0, -1)
    if kind == "hash":
        return kind, await redis.hgetall(key)
    if kind == "set":
        return kind, await redis.smembers(key)
    if kind == "zset":
        return kind, await redis.zrange(key, 0, -1, withscores=True)
    return kind, None


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Log events of this process while the block runs."""
    # every module whose log lines the garbage tests read
    for module in (
        worker,
        runtime,
        fetch,
        liveness,
        outcomes,
        stats,
        executor,
        garbage,
        cron_runner,
    ):
        # an in-process CLI run (cache_logger_on_first_use) may have pinned an old set-up
        module.log.__dict__.pop("bind", None)  # type: ignore[attr-defined]
    with capture_logs() as logs:
        yield logs


def set_aside_lines(logs: list[dict[str, Any]]) -> dict[str, str]:
    """Garbage key -> reason, of every ``queue.set_aside`` line logged."""
    return {e["key"]: e["reason"] for e in logs if e["event"] == "queue.set_aside"}
