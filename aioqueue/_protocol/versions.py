"""Old versions of the Functions library, deleted once no live worker runs them.

Every release loads its own ``aioqueue_<version>`` beside the others (a rolling
deploy runs two at once), so without this each one would stay in Redis for good.
Each worker registers the version it runs under that version's own prefix
(``library_beat``, with every heartbeat; removed when it deregisters). A worker
that starts lists the libraries and deletes each other ``aioqueue_<version>``
that no worker registered within ``LIBRARY_TTL`` runs; never its own, never
``aioqueue_testing_*`` (aioqueue.testing's build, which its tests manage).

Races are harmless: a client or worker of a version deleted under it (one that
had not beaten yet) meets "Function not found" at its next call and loads its
library again (``FunctionCalls._call``), then carries on.
"""

from __future__ import annotations

from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from aioqueue._protocol.keys import LAYOUT, QueueKeys, library_prefix
from aioqueue._protocol.library import VERSION, FunctionCalls
from aioqueue.errors import AioqueueError, ConfigurationError

__all__ = ["LIBRARY_TTL", "beat", "check_layout", "collect", "library_names"]

log = structlog.get_logger("aioqueue.worker")

# a worker that has not beaten for this long runs no version (its registry TTL too)
LIBRARY_TTL = 60.0
_PATTERN = "aioqueue_*"
_TESTING = "aioqueue_testing_"


def library_names(reply: Any) -> list[str]:
    """The library names in a FUNCTION LIST reply (RESP2 pairs or RESP3 maps)."""
    names = []
    for lib in reply or ():
        if isinstance(lib, dict):
            name = lib.get(b"library_name", lib.get("library_name"))
        else:
            items = list(lib)
            keys = [k.decode() if isinstance(k, bytes) else k for k in items[::2]]
            name = items[2 * keys.index("library_name") + 1] if "library_name" in keys else None
        if name is not None:
            names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


async def beat(calls: FunctionCalls, worker: str, *, leaving: bool = False) -> None:
    """Registers ``worker`` as running this version (or, leaving, no longer)."""
    await calls._call(
        "library_beat", "", worker, "1" if leaving else "0", prefix=library_prefix(VERSION)
    )


async def collect(calls: FunctionCalls) -> list[str]:
    """Deletes the old libraries no live worker runs; the names deleted. A Redis
    that refuses (an ACL without FUNCTION DELETE) or does not answer is logged,
    never fatal: the worker starts all the same."""
    try:
        with anyio.fail_after(calls.timeout):
            return await _collect(calls)
    except (RedisError, AioqueueError, TimeoutError) as exc:
        log.warning("worker.library_cleanup_failed", error=str(exc) or type(exc).__name__)
        return []


async def _collect(calls: FunctionCalls) -> list[str]:
    redis = calls.redis
    nodes: list[Any] = [None]
    if isinstance(redis, RedisCluster):
        nodes = redis.get_primaries()  # each primary holds its own copy
    elif not isinstance(redis, Redis):
        return []
    unused: dict[str, bool] = {}  # library name -> no live worker runs it
    deleted: list[str] = []
    for node in nodes:
        extra = {} if node is None else {"target_nodes": node}
        reply = await redis.execute_command("FUNCTION", "LIST", "LIBRARYNAME", _PATTERN, **extra)
        for name in library_names(reply):
            version = name.removeprefix("aioqueue_")
            if name.startswith(_TESTING) or version == VERSION:
                continue
            if name not in unused:
                users = await calls._call(
                    "library_users", "", int(LIBRARY_TTL * 1000), prefix=library_prefix(version)
                )
                unused[name] = int(users) == 0
            if not unused[name]:
                continue
            try:
                await redis.execute_command("FUNCTION", "DELETE", name, **extra)
            except ResponseError as exc:
                if "not found" not in str(exc).lower():  # another worker was first
                    raise
                continue
            if name not in deleted:
                log.info("worker.library_deleted", library=name)
                deleted.append(name)
    return deleted


async def check_layout(calls: FunctionCalls, queues: tuple[str, ...] | list[str]) -> None:
    """Refuses (``ConfigurationError``) a queue whose recorded data layout is newer
    than this release's ``LAYOUT``, or unreadable: its keys may mean what this
    code would misread. A queue never enqueued to has none yet: any release may."""
    for queue in queues:
        try:
            raw = await calls.read("HGET", QueueKeys(queue).meta, "layout")
        except NoPermissionError as exc:
            raise ConfigurationError(
                f"the Redis user may not read {QueueKeys(queue).meta}, where queue {queue!r}"
                f" records its data layout: {exc}"
            ) from None
        if raw is None:
            continue
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if not text.isdigit():
            raise ConfigurationError(
                f"queue {queue!r} records a data layout aioqueue cannot read ({text!r}"
                f" in {QueueKeys(queue).meta})"
            )
        if int(text) > LAYOUT:
            raise ConfigurationError(
                f"queue {queue!r} is stored in data layout {text}, newer than this"
                f" aioqueue's {LAYOUT}: a later release wrote it; upgrade this worker"
            )
