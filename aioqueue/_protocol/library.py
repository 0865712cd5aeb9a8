"""Loading the Redis Functions library (``lua/``, assembled by ``source``) and calling into it.

The library name and every function name carry a hash of the Lua source, so
workers and producers of different versions can share one Redis during a
rolling deploy without calling each other's functions.

Every Function takes the event stream's length (``MAXLEN ~``) as its first
argument, before its own (see ``register`` in the Lua library): the one setting
every call carries, put there by ``FunctionCalls._call`` so no wrapper forgets it.
``aioqueue._protocol.functions`` has the typed wrapper of each Function.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextvars import ContextVar
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, OutOfMemoryError, ResponseError

from aioqueue._protocol.durations import count
from aioqueue._protocol.keys import EVENTS_MAXLEN, queue_prefix
from aioqueue._protocol.source import LIBRARY, VERSION
from aioqueue._redis.cluster import ClusterClient, load_library
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE, refusal
from aioqueue._redis.lane import Lane, MergedFailure, Started, closed_transport
from aioqueue.errors import AioqueueError, ConfigurationError, QueueFull, RedisUnavailable

__all__ = ["LIBRARY", "TESTING_CLOCK", "TESTING_LIBRARY", "VERSION", "FunctionCalls"]


_FN = f"aq_{VERSION}_"
# a merged call's key in the lane and its command head (see FunctionCalls._merge_head)
MergeHead = tuple[tuple[Any, ...], tuple[Any, ...]]
MERGE_HEADS_KEPT = 1024
# aioqueue.testing's build: these same function names on its private Redis, on a
# clock that moves only when a test moves it. A worker refuses a Redis that holds
# it unless aioqueue.testing.run_worker started it (which sets TESTING_CLOCK in the
# worker's context); nothing stored in Redis can enable it, and the library above
# never reads a test clock.
TESTING_LIBRARY = f"aioqueue_testing_{VERSION}"
TESTING_CLOCK: ContextVar[bool] = ContextVar("aioqueue_testing_clock", default=False)


def _refusal(name: str, exc: ResponseError) -> AioqueueError:
    """Our error for a refusal by the library (QUEUEFULL) or by Redis (OOM, an ACL...)."""
    message = str(exc)
    if message.startswith("QUEUEFULL"):
        return QueueFull(message.removeprefix("QUEUEFULL "))
    return refusal(exc, name)


class FunctionCalls:
    """Calls into the library; reloads it once if Redis lost it (restart, FLUSHALL).

    Every call must end within ``timeout`` seconds or raises ``RedisUnavailable``.
    On one Redis (or Sentinel's primary) calls go through a ``Lane``: at most
    ``max_links`` connections, shared by every caller; concurrent enqueues to
    one queue and concurrent watches are merged into one call.

    events_maxlen: the length the queues' event streams are capped at by the
    calls made here (approximately); 0 writes no events.
    """

    def __init__(
        self,
        redis: RedisClient,
        timeout: float = 10.0,
        *,
        max_links: int = 4,
        events_maxlen: int = EVENTS_MAXLEN,
    ) -> None:
        self.redis = redis
        self.timeout = timeout
        self.events_maxlen = count(events_maxlen, "events_maxlen", least=0)
        # one Redis: the lean path; a cluster routes (and follows MOVED) in redis-py
        self._lane = (
            Lane(redis, max_links=max_links, stall_timeout=max(timeout, 2.0))
            if isinstance(redis, Redis)
            else None
        )
        self._loading: asyncio.Future[None] | None = None
        # per queue: the id of a claim whose outcome is unknown, sent again by the next
        self._claim_ids: dict[str, str] = {}
        self._merge_heads: dict[tuple[str, str, tuple[Any, ...]], MergeHead] = {}
        self._enqueue_heads: dict[str, MergeHead] = {}  # the same, by queue alone

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
        prefix: str | None = None,
    ) -> Any:
        """idempotent: the call may be sent again when its connection is lost before
        the reply (one that is not raises ``RedisUnavailable`` instead).
        sent: a number is appended for each time the call was sent again.
        prefix: KEYS[1] when it is not ``queue``'s prefix (a library version's)."""
        lane = self._lane
        key = prefix or queue_prefix(queue)
        command = ("FCALL", _FN + name, 1, key, self.events_maxlen, *args)
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

    def _merge_head(self, name: str, queue: str, head: tuple[Any, ...]) -> MergeHead:
        """The merge key and the command head of ``name``'s merged calls on ``queue``,
        made once: the hottest path should not build them per item."""
        made = self._merge_heads.get((name, queue, head))
        if made is None:
            if len(self._merge_heads) >= MERGE_HEADS_KEPT:  # a producer of many queues
                self._merge_heads.clear()
                self._enqueue_heads.clear()
            prefix = queue_prefix(queue)
            made = self._merge_heads[name, queue, head] = (
                (name, prefix, *head),
                ("FCALL", _FN + name, 1, prefix, self.events_maxlen, *head),
            )
        return made

    async def _merged(
        self,
        name: str,
        queue: str,
        head: tuple[Any, ...],
        item: tuple[Any, ...],
        width: int,
        sent: list[int] | None = None,
        first: Started | None = None,
    ) -> Any:
        """One item of a call that concurrent callers share (see ``Lane.call_merged``);
        its slice of the reply. Off the lane (a cluster) the item goes alone.
        first: the item's first try (``Lane.start_merged``), failed."""
        lane = self._lane
        if lane is None:
            out = await self._call(name, queue, *head, *item)
            return out[0] if width == 1 else out
        key, command = self._merge_head(name, queue, head)
        try:
            for _ in range(2):
                try:
                    return await lane.call_merged(
                        key, command, item, width, timeout=self.timeout, sent=sent, first=first
                    )
                except MergedFailure as failed:
                    error, alone = failed.error, False
                except ResponseError as exc:
                    error, alone = exc, True
                first = None
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
                            pipe.fcall(_FN + name, 1, prefix, self.events_maxlen, *args)
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

    async def read(self, *command: Any) -> Any:
        """One plain command (a read of one key) with the same deadline as a call."""
        try:
            if self._lane is not None:
                return await self._lane.call(*command, timeout=self.timeout)
            async with asyncio.timeout(self.timeout):
                return await self.redis.execute_command(*command)
        except TimeoutError:
            raise RedisUnavailable(self._late(str(command[0]))) from None
