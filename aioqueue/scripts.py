"""The Redis Functions library (``lua/aioqueue.lua``) and one typed wrapper per function.

The library name and every function name carry a hash of the Lua source, so
workers and producers of different versions can share one Redis during a
rolling deploy without calling each other's functions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, ResponseError

from aioqueue.errors import QueueFull, RedisOutOfMemory, RedisUnavailable
from aioqueue.keys import queue_prefix

_SOURCE = resources.files("aioqueue").joinpath("lua/aioqueue.lua").read_text()
VERSION = hashlib.sha1(_SOURCE.encode()).hexdigest()[:10]  # noqa: S324 - a name, not security
LIBRARY = _SOURCE.replace("__VERSION__", VERSION)
_FN = f"aq_{VERSION}_"
# due jobs and expired leases moved per claim: ~5 ms of Redis time at most, so a
# burst of a million due jobs never shows as a slow command
PROMOTE_LIMIT = 300


EnqueueWire = tuple[str, bytes, int, int, str]


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery handed to a worker by ``claim``."""

    queue: str
    id: str
    token: str
    attempt: int
    lost: int
    payload: bytes | None


class Scripts:
    """Calls into the library; reloads it once if Redis lost it (restart, FLUSHALL).

    Every call must end within ``timeout`` seconds or raises ``RedisUnavailable``.
    """

    def __init__(self, redis: Redis, timeout: float = 10.0) -> None:
        self.redis = redis
        self.timeout = timeout

    async def load(self) -> None:
        try:
            with anyio.fail_after(self.timeout):
                await self.redis.function_load(LIBRARY, replace=False)
        except TimeoutError:
            raise RedisUnavailable(f"Redis did not answer within {self.timeout}s") from None
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    async def _call(self, name: str, queue: str, *args: Any) -> Any:
        try:
            with anyio.fail_after(self.timeout):
                try:
                    return await self.redis.fcall(_FN + name, 1, queue_prefix(queue), *args)
                except ResponseError as exc:
                    if "Function not found" not in str(exc):
                        raise
                await self.load()
                return await self.redis.fcall(_FN + name, 1, queue_prefix(queue), *args)
        except OutOfMemoryError as exc:
            raise RedisOutOfMemory(f"Redis refused {name}: {exc}") from None
        except ResponseError as exc:
            message = str(exc)
            if message.startswith("QUEUEFULL"):
                raise QueueFull(message.removeprefix("QUEUEFULL ")) from None
            raise
        except TimeoutError:
            raise RedisUnavailable(f"Redis did not answer {name} within {self.timeout}s") from None

    async def enqueue(self, queue: str, jobs: list[EnqueueWire], max_length: int = 0) -> list[str]:
        """jobs: (id, payload, delay_ms, at_ms, lock). Returns 'new' or the existing status.

        lock: '' or the mode letter ('w' wait, 'd' drop) then the lock's name.

        max_length > 0 refuses the whole batch (``QueueFull``) when the queue's
        queued and scheduled jobs plus the batch would exceed it.
        """
        flat: list[Any] = [max_length]
        for job in jobs:
            flat.extend(job)
        out = await self._call("enqueue", queue, *flat)
        return [s.decode() for s in out]

    async def claim(
        self, queue: str, n: int, worker: str, lease_ms: int, promote_limit: int = PROMOTE_LIMIT
    ) -> tuple[float, list[Claimed]]:
        """Up to n deliveries, and the ms an idle worker may wait (-1: nothing pending).

        The wait has microsecond precision: a worker waiting for a due time
        must not add up to a millisecond of rounding to it.
        """
        out = await self._call("claim", queue, n, worker, lease_ms, promote_limit)
        jobs = [
            Claimed(
                queue,
                out[i].decode(),
                out[i + 1].decode(),
                int(out[i + 2]),
                int(out[i + 3]),
                out[i + 4],
            )
            for i in range(1, len(out), 5)
        ]
        wait_us = int(out[0])
        return (wait_us / 1000 if wait_us >= 0 else -1.0), jobs

    async def finish(
        self, queue: str, items: list[tuple[str, str, str, bytes, int, int]]
    ) -> list[int]:
        """items: (id, token, outcome, blob, ttl_ms, delay_ms).

        Returns 1 per item, or 0 where the token no longer owns the job (stale).
        """
        flat: list[Any] = []
        for item in items:
            flat.extend(item)
        return [int(x) for x in await self._call("finish", queue, *flat)]

    async def heartbeat(
        self,
        queue: str,
        worker: str,
        lease_ms: int,
        info: bytes,
        registry_ttl_ms: int,
        held: list[tuple[str, str]],
    ) -> list[tuple[str, str]]:
        """Extends held leases; returns (id, 'abort' | 'lost') for jobs the worker must stop."""
        flat: list[Any] = []
        for item in held:
            flat.extend(item)
        out = await self._call("heartbeat", queue, worker, lease_ms, info, registry_ttl_ms, *flat)
        return [(out[i].decode(), out[i + 1].decode()) for i in range(0, len(out), 2)]

    async def deregister(self, queue: str, worker: str) -> None:
        await self._call("deregister", queue, worker)

    async def abort(self, queue: str, job_id: str, ttl_ms: int) -> str | None:
        out = await self._call("abort", queue, job_id, ttl_ms)
        return out.decode() if out else None

    async def watch(self, queue: str, job_id: str, client: str) -> tuple[str, bytes]:
        status, blob = await self._call("watch", queue, job_id, client)
        return status.decode(), blob

    async def quarantine(self, queue: str, job_id: str, token: str, reason: str) -> bool:
        return bool(await self._call("quarantine", queue, job_id, token, reason))

    async def requeue(self, queue: str, ids: list[str]) -> int:
        return int(await self._call("requeue", queue, *ids)) if ids else 0

    async def purge(self, queue: str, ids: list[str]) -> int:
        return int(await self._call("purge", queue, *ids)) if ids else 0

    async def cron_fire(
        self, queue: str, name: str, tick_ms: int, job_id: str, payload: bytes, lock: str
    ) -> tuple[str, int]:
        """Fires one cron tick unless another worker did: ('fired' | 'dup' | 'overlap',
        Redis time in ms) or ('early', ms until the tick by the Redis clock)."""
        status, ms = await self._call("cron_fire", queue, name, tick_ms, job_id, payload, lock)
        return status.decode(), int(ms)
