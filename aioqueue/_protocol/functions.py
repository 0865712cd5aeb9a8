"""The Redis Functions library (``lua/aioqueue.lua``) and one typed wrapper per function.

The library name and every function name carry a hash of the Lua source, so
workers and producers of different versions can share one Redis during a
rolling deploy without calling each other's functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, OutOfMemoryError, ResponseError

from aioqueue._protocol import signing
from aioqueue._protocol.envelope import ENVELOPE_VERSION
from aioqueue._protocol.garbage import log_set_aside
from aioqueue._protocol.keys import queue_prefix
from aioqueue._redis.cluster import ClusterClient, load_library
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE, refusal
from aioqueue._redis.lane import Lane, MergedFailure, closed_transport
from aioqueue.errors import (
    AioqueueError,
    ConfigurationError,
    NotReplicated,
    QueueFull,
    RedisUnavailable,
)

_SOURCE = resources.files("aioqueue._protocol").joinpath("lua/aioqueue.lua").read_text()
# what the claim must know of the payload to read a job's task name; in the
# version hash, so a change here is a new library, never two under one name
_CONSTANTS = {
    "__SIGNED_MAGIC__": signing.MAGIC.decode(),
    "__SIGNED_HEADER__": str(signing.HEADER),
    "__ENVELOPE_VERSION__": str(ENVELOPE_VERSION),
}
_TEXT = functools.reduce(lambda text, kv: text.replace(*kv), _CONSTANTS.items(), _SOURCE)
VERSION = hashlib.sha1(_TEXT.encode()).hexdigest()[:10]  # noqa: S324 - a name, not security
LIBRARY = _TEXT.replace("__VERSION__", VERSION)
_FN = f"aq_{VERSION}_"
# aioqueue.testing's build: these same function names on its private Redis, on a
# clock that moves only when a test moves it. A worker refuses a Redis that holds
# it unless aioqueue.testing.run_worker started it (which sets TESTING_CLOCK in the
# worker's context); nothing stored in Redis can enable it, and the library above
# never reads a test clock.
TESTING_LIBRARY = f"aioqueue_testing_{VERSION}"
TESTING_CLOCK: ContextVar[bool] = ContextVar("aioqueue_testing_clock", default=False)
# due jobs and expired leases moved per claim: ~2 ms of Redis time on the 2-core box, so a
# burst of a million due jobs never shows as a slow command
PROMOTE_LIMIT = 200


EnqueueWire = tuple[str, bytes, int, int, str]


def _refusal(name: str, exc: ResponseError) -> AioqueueError:
    """Our error for a refusal by the library (QUEUEFULL) or by Redis (OOM, an ACL...)."""
    message = str(exc)
    if message.startswith("QUEUEFULL"):
        return QueueFull(message.removeprefix("QUEUEFULL "))
    return refusal(exc, name)


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery handed to a worker by ``claim``. lock: the job's lock field (b'': none)."""

    queue: str
    id: str
    token: str
    attempt: int
    lost: int
    payload: bytes | None
    lock: bytes = b""
    cpu: bool = False  # a job of one of the claiming worker's CPU-bound tasks
    wait: float | None = None  # seconds from due to claim, when the claim reply says


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """What one ``claim`` call did.

    wait_ms: how long an idle worker may block (-1: nothing pending); promoted,
    reaped: due jobs and expired leases it moved to the ready list (each at most
    the call's promote limit); set_aside: lines '<key>\\0<reason>' of things set
    aside since the last claim that took them (logged by ``claim``);
    waiting_cpu: CPU-bound jobs left aside for workers with a free CPU slot.
    """

    wait_ms: float
    jobs: list[Claimed]
    promoted: int
    reaped: int
    set_aside: list[bytes]
    waiting_cpu: int = 0


class Scripts:
    """Calls into the library; reloads it once if Redis lost it (restart, FLUSHALL).

    Every call must end within ``timeout`` seconds or raises ``RedisUnavailable``.
    On one Redis (or Sentinel's primary) calls go through a ``Lane``: at most
    ``max_links`` connections, shared by every caller; concurrent enqueues to
    one queue and concurrent watches are merged into one call.
    """

    def __init__(self, redis: RedisClient, timeout: float = 10.0, *, max_links: int = 4) -> None:
        self.redis = redis
        self.timeout = timeout
        # one Redis: the lean path; a cluster routes (and follows MOVED) in redis-py
        self._lane = (
            Lane(redis, max_links=max_links, stall_timeout=max(timeout, 2.0))
            if isinstance(redis, Redis)
            else None
        )
        self._loading: asyncio.Future[None] | None = None
        # per queue: the id of a claim whose outcome is unknown, sent again by the next
        self._claim_ids: dict[str, str] = {}

    @property
    def lane(self) -> Lane | None:
        return self._lane

    async def aclose(self) -> None:
        if self._lane is not None:
            await self._lane.aclose()

    async def load(self, *, worker: bool = False) -> None:
        """Loads the library; concurrent callers share one load (a restart makes
        every call in flight meet "Function not found" at once).

        worker: refuse aioqueue.testing's build (see TESTING_LIBRARY)."""
        if self._loading is not None and not worker:
            await asyncio.shield(self._loading)
            return
        loading = self._loading = asyncio.get_running_loop().create_future()
        try:
            await self._load(worker)
            loading.set_result(None)
        except BaseException as exc:
            loading.set_exception(exc)
            loading.exception()  # retrieved: a load nobody else awaited is not an error
            raise
        finally:
            if self._loading is loading:
                self._loading = None

    async def _load(self, worker: bool) -> None:
        try:
            with anyio.fail_after(self.timeout):
                if isinstance(self.redis, RedisCluster):
                    await load_library(self.redis, LIBRARY)  # on every primary
                elif self._lane is not None:
                    await self._lane.call("FUNCTION", "LOAD", LIBRARY, timeout=self.timeout)
                else:
                    await self.redis.function_load(LIBRARY, replace=False)
        except TimeoutError:
            raise RedisUnavailable(f"Redis did not answer within {self.timeout}s") from None
        except ResponseError as exc:
            if isinstance(exc, UNAVAILABLE):  # CLUSTERDOWN, TRYAGAIN: retried by callers
                raise
            if "already exists" not in str(exc):
                raise refusal(exc, "FUNCTION LOAD") from None
            # another library holds our function names: which one?
            if worker and f"'aioqueue_{VERSION}'" not in str(exc):
                await self._refuse_testing_clock()

    async def _refuse_testing_clock(self) -> None:
        if TESTING_CLOCK.get() or not isinstance(self.redis, Redis):
            return
        with anyio.fail_after(self.timeout):
            found = await self.redis.function_list(library=TESTING_LIBRARY)
        if found:
            raise ConfigurationError(
                f"this Redis runs aioqueue.testing's clock ({TESTING_LIBRARY}): only a worker"
                " started by aioqueue.testing.run_worker may run on it"
            ) from None

    async def _call(
        self,
        name: str,
        queue: str,
        *args: Any,
        idempotent: bool = True,
        sent: list[int] | None = None,
    ) -> Any:
        """idempotent: the call may be sent again when its connection is lost before
        the reply (one that is not raises ``RedisUnavailable`` instead).
        sent: a number is appended for each time the call was sent again."""
        lane = self._lane
        command = ("FCALL", _FN + name, 1, queue_prefix(queue), *args)
        try:
            if lane is not None:
                # the lane keeps the deadline: no timer per call on the hottest path
                try:
                    return await lane.call(
                        *command, idempotent=idempotent, timeout=self.timeout, sent=sent
                    )
                except ResponseError as exc:
                    if "Function not found" not in str(exc):
                        raise
                await self.load()
                return await lane.call(
                    *command, idempotent=idempotent, timeout=self.timeout, sent=sent
                )
            async with asyncio.timeout(self.timeout):
                try:
                    return await self.redis.execute_command(*command)
                except ResponseError as exc:
                    if "Function not found" not in str(exc):
                        raise
                await self.load()
                return await self.redis.execute_command(*command)
        except ResponseError as exc:
            if isinstance(exc, UNAVAILABLE):  # CLUSTERDOWN, TRYAGAIN: retried by callers
                raise
            raise _refusal(name, exc) from None
        except TimeoutError:
            raise RedisUnavailable(self._late(name)) from None
        except RuntimeError as exc:
            if not closed_transport(exc):
                raise
            raise RedisUnavailable(f"the link to Redis closed during {name}") from exc

    def _late(self, name: str) -> str:
        why = self._lane.last_error if self._lane is not None else ""
        return f"Redis did not answer {name} within {self.timeout}s" + (
            f" (last error: {why})" if why else ""
        )

    async def _merged(
        self,
        name: str,
        queue: str,
        head: tuple[Any, ...],
        item: tuple[Any, ...],
        width: int,
        sent: list[int] | None = None,
    ) -> Any:
        """One item of a call that concurrent callers share (see ``Lane.call_merged``);
        its slice of the reply. Off the lane (a cluster) the item goes alone."""
        lane = self._lane
        if lane is None:
            out = await self._call(name, queue, *head, *item)
            return out[0] if width == 1 else out
        prefix = queue_prefix(queue)
        command = ("FCALL", _FN + name, 1, prefix, *head)
        try:
            for _ in range(2):
                try:
                    return await lane.call_merged(
                        (name, prefix, *head), command, item, width, timeout=self.timeout, sent=sent
                    )
                except MergedFailure as failed:
                    error, alone = failed.error, False
                except ResponseError as exc:
                    error, alone = exc, True
                if "Function not found" in str(error):
                    await self.load()
                    continue
                if isinstance(error, UNAVAILABLE):  # CLUSTERDOWN, TRYAGAIN, LOADING...
                    raise error
                if not isinstance(error, ResponseError):
                    raise error
                # this item's own refusal, or one that concerns every item (OOM, QUEUEFULL)
                if (
                    alone
                    or isinstance(error, OutOfMemoryError)
                    or str(error).startswith("QUEUEFULL")
                ):
                    raise _refusal(name, error) from None
                break
        except TimeoutError:
            raise RedisUnavailable(self._late(name)) from None
        # another item may have failed the merged call: this one alone decides
        out = await self._call(name, queue, *head, *item, sent=sent)
        return out[0] if width == 1 else out

    async def enqueue(
        self,
        queue: str,
        jobs: list[EnqueueWire],
        max_length: int = 0,
        *,
        replicated: float | None = None,
        fresh_ids: bool = False,
    ) -> list[str]:
        """jobs: (id, payload, delay_ms, at_ms, lock). Returns 'new' or the existing status.

        lock: '' or the mode letter ('w' wait, 'd' drop) then the lock's name.
        replicated: wait up to this many seconds for one replica to acknowledge.

        max_length > 0 refuses the whole batch (``QueueFull``) when the queue's
        queued and scheduled jobs plus the batch would exceed it.
        replicated: seconds to wait for one replica to acknowledge the write;
        ``NotReplicated`` when none did.
        fresh_ids: the ids were made up for this call, so a job found under one
        after the call was sent again (a lost link) is the one it stored: 'new'.
        """
        sent: list[int] = []
        if replicated is None and max_length == 0 and len(jobs) == 1:
            # concurrent single enqueues to one queue become one call (an id
            # already stored is not stored twice, so a lost link retries it)
            status: bytes = await self._merged("enqueue", queue, (0,), jobs[0], 1, sent)
            return ["new" if sent and fresh_ids else status.decode()]
        flat: list[Any] = [max_length]
        for job in jobs:
            flat.extend(job)
        if replicated is None:
            out = await self._call("enqueue", queue, *flat, sent=sent)
            if sent and fresh_ids:
                return ["new"] * len(out)
        else:
            out, acked = await self._call_and_wait("enqueue", queue, replicated, *flat)
            if acked < 1:
                raise NotReplicated(
                    f"no replica acknowledged the enqueue to {queue!r} within {replicated}s",
                    job_ids=[job[0] for job in jobs],
                )
        return [s.decode() for s in out]

    async def _call_and_wait(
        self, name: str, queue: str, wait: float, *args: Any
    ) -> tuple[Any, int]:
        """One Function call then ``WAIT 1``, on the same connection (WAIT counts the
        replicas that acknowledged that connection's writes). Returns (reply, replicas)."""
        prefix = queue_prefix(queue)
        try:
            with anyio.fail_after(self.timeout + wait):
                for attempt in range(3):
                    redis = self._node_for(prefix)
                    try:
                        async with redis.pipeline(transaction=False) as pipe:
                            pipe.fcall(_FN + name, 1, prefix, *args)
                            pipe.execute_command("WAIT", 1, max(1, int(wait * 1000)))
                            reply, acked = await pipe.execute(raise_on_error=False)
                    except UNAVAILABLE:
                        await self._refresh_route(prefix)
                        raise
                    if not isinstance(reply, ResponseError):
                        if isinstance(acked, ResponseError):  # an ACL without WAIT
                            raise refusal(acked, f"WAIT after {name} (which was done)")
                        return reply, int(acked)
                    if "Function not found" in str(reply):
                        await self.load()
                    elif isinstance(reply, AskError) and attempt < 2:  # MOVED too
                        await self._refresh_route(prefix)  # slot moved: ask the cluster again
                    elif isinstance(reply, UNAVAILABLE):
                        raise reply
                    else:
                        raise _refusal(name, reply)
                raise RedisUnavailable(f"{name} on {queue!r} kept being redirected")
        except TimeoutError:
            raise RedisUnavailable(f"Redis did not answer {name} within {self.timeout}s") from None

    def _node_for(self, prefix: str) -> Redis:
        """The plain client that talks to the node owning ``prefix`` (itself, off-cluster)."""
        if isinstance(self.redis, ClusterClient):
            return self.redis.node_client(self.redis.slot_owner(prefix))
        if isinstance(self.redis, RedisCluster):
            raise ConfigurationError("replicated calls need aioqueue._redis.cluster.ClusterClient")
        return self.redis

    async def _refresh_route(self, prefix: str) -> None:
        if isinstance(self.redis, ClusterClient):
            with contextlib.suppress(*UNAVAILABLE):
                await self.redis.owner_of(prefix)

    async def claim(
        self,
        queue: str,
        n: int,
        worker: str,
        lease_ms: int,
        promote_limit: int = PROMOTE_LIMIT,
        *,
        cpu_free: int = 0,
        cpu_tasks: tuple[str, ...] = (),
        run_free: int | None = None,
    ) -> ClaimReply:
        """Up to n deliveries, and the ms an idle worker may wait (-1: nothing pending).

        cpu_tasks: the worker's CPU-bound tasks, of which at most cpu_free jobs
        are taken, and only among the first run_free jobs of the claim (see
        claim in the Lua library). The wait has microsecond precision: a worker
        waiting for a due time must not add up to a millisecond of rounding to
        it. What the call set aside (and earlier calls of any Function did) is
        logged here.
        """
        # a claim sent again after a lost reply returns the same deliveries (see the
        # Lua claim); so does the next claim after one whose outcome is unknown
        claim_id = self._claim_ids.pop(queue, None) or secrets.token_hex(8)
        run = n if run_free is None else run_free
        try:
            out = await self._call(
                "claim",
                queue,
                n,
                worker,
                lease_ms,
                promote_limit,
                claim_id,
                cpu_free,
                run,
                *cpu_tasks,
            )
        except BaseException:
            self._claim_ids[queue] = claim_id
            raise
        wait_us, promoted, reaped = int(out[0]), int(out[1]), int(out[2])
        waiting_cpu, news = int(out[3]), int(out[4])
        first = 5 + news
        lines = list(out[5:first])
        if lines:
            log_set_aside(queue, lines)
        # ids are checked by the Function: valid UTF-8, no spaces or NUL
        jobs = [
            Claimed(
                queue,
                out[i].decode(),
                out[i + 1].decode(),
                int(out[i + 2]),
                int(out[i + 3]),
                out[i + 4],
                out[i + 5],
                out[i + 6] == 1,
            )
            for i in range(first, len(out), 7)
        ]
        wait_ms = wait_us / 1000 if wait_us >= 0 else -1.0
        return ClaimReply(wait_ms, jobs, promoted, reaped, lines, waiting_cpu)

    async def finish(
        self, queue: str, items: list[tuple[str, str, str, bytes, int, int]]
    ) -> list[int]:
        """items: (id, token, outcome, blob, ttl_ms, delay_ms).

        Returns 1 per item, 0 where the token no longer owns the job (stale), 2
        where the job no longer parsed and was set aside instead.
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
        """Extends held leases; returns (token, 'abort' | 'lost') for deliveries to stop."""
        flat: list[Any] = []
        for item in held:
            flat.extend(item)
        out = await self._call("heartbeat", queue, worker, lease_ms, info, registry_ttl_ms, *flat)
        return [(out[i].decode(), out[i + 1].decode()) for i in range(0, len(out), 2)]

    async def deregister(self, queue: str, worker: str) -> None:
        await self._call("deregister", queue, worker)

    async def abort(self, queue: str, job_id: str, ttl_ms: int) -> str | None:
        # not sent twice: a second abort would report the first one's 'aborted'
        out = await self._call("abort", queue, job_id, ttl_ms, idempotent=False)
        return out.decode() if out else None

    async def watch(self, queue: str, job_id: str, client: str) -> tuple[str, bytes]:
        """The job's state, and ``client`` registered as its waiter unless it ended."""
        status, blob = await self._merged("watch", queue, (client,), (job_id,), 2)
        return status.decode(), blob

    async def watch_many(
        self, queue: str, job_ids: list[str], client: str
    ) -> list[tuple[str, bytes]]:
        """``watch`` of many jobs in one call: (status, blob) per id, in order."""
        out = await self._call("watch", queue, client, *job_ids)
        return [(out[i].decode(), out[i + 1]) for i in range(0, len(out), 2)]

    async def unwatch(self, queue: str, job_ids: list[str], client: str) -> int:
        """Forgets ``client`` as a waiter of these jobs; how many it waited for."""
        if not job_ids:
            return 0
        return sum(int(x) for x in await self._call("unwatch", queue, client, *job_ids))

    async def read(self, *command: Any) -> Any:
        """One plain command (a read of one key) with the same deadline as a call."""
        try:
            if self._lane is not None:
                return await self._lane.call(*command, timeout=self.timeout)
            async with asyncio.timeout(self.timeout):
                return await self.redis.execute_command(*command)
        except TimeoutError:
            raise RedisUnavailable(self._late(str(command[0]))) from None

    async def quarantine(self, queue: str, job_id: str, token: str, reason: str) -> bool:
        return bool(await self._call("quarantine", queue, job_id, token, reason))

    # not sent twice: a second send would count 0 for the jobs the first one moved
    async def requeue(self, queue: str, ids: list[str]) -> int:
        return int(await self._call("requeue", queue, *ids, idempotent=False)) if ids else 0

    async def purge(self, queue: str, ids: list[str]) -> int:
        return int(await self._call("purge", queue, *ids, idempotent=False)) if ids else 0

    async def cron_fire(
        self,
        queue: str,
        name: str,
        tick_ms: int,
        job_id: str,
        payload: bytes,
        lock: str,
        definition: str = "",
    ) -> tuple[str, int]:
        """Fires one cron tick unless another worker did: ('fired' | 'dup' | 'overlap' |
        'superseded', Redis time in ms) or ('early', ms until the tick by the Redis clock).

        definition: the caller's schedule; 'superseded' when ``name`` has another
        one now (see ``cron_define``); '' is not checked.
        """
        status, ms = await self._call(
            "cron_fire", queue, name, tick_ms, job_id, payload, lock, definition
        )
        return status.decode(), int(ms)

    async def cron_define(self, queue: str, name: str, definition: str) -> str | None:
        """Registers the schedule of cron job ``name`` (the newest wins); returns the
        definition it replaced, if any."""
        previous = await self._call("cron_define", queue, name, definition)
        return previous.decode("utf-8", "backslashreplace") if previous else None
