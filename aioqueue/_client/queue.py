"""The producer side: ``Queue`` enqueues jobs and hands back ``Job[R]`` handles.

    async with Queue("redis://localhost") as queue:
        job = await queue.enqueue(send_email, "a@b.c")
        print(await job)

An enqueue is one Function call (one round trip); ``enqueue_many`` sends any
number of jobs in one round trip too. Arguments are encoded before anything is
sent, so an argument that cannot be encoded fails the call and writes nothing.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import anyio
from redis.exceptions import ResponseError

from aioqueue._client.encoding import encode_call
from aioqueue._client.fanout import send_per_queue
from aioqueue._client.hooked import ProducerHooks
from aioqueue._client.job import Job
from aioqueue._client.sharded import ShardedResultWaiter
from aioqueue._client.waiter import ResultWaiter
from aioqueue._hooks import Hooks, with_installed
from aioqueue._protocol import signing
from aioqueue._protocol.functions import EnqueueWire, Scripts
from aioqueue._protocol.keys import EVENTS_MAXLEN, check_job_id, check_queue_name
from aioqueue._redis.cluster import ClusterClient
from aioqueue._redis.connect import RedisClient, connect_any, default_url
from aioqueue._redis.errors import UNAVAILABLE, mapped_errors, refusal, unavailable
from aioqueue._redis.lane import Started
from aioqueue._redis.retry import Backoff, deadline
from aioqueue.errors import (
    AioqueueError,
    ConfigurationError,
    NotAllEnqueued,
    QueueClosed,
    QueueFull,
)
from aioqueue.serializers import Serializer, get_serializer
from aioqueue.task import DEFAULT_QUEUE, DEFAULT_RESULT_TTL, Call, Task, task_ref

__all__ = ["Queue"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


FULL_FIRST, FULL_MOST = 0.005, 0.5  # seconds between tries of an enqueue into a full queue


class Queue:
    """A connection to one Redis for enqueueing jobs and awaiting their results.

    Open it with ``async with Queue(...) as queue:`` (it loads the Functions library
    and subscribes for results on entry, closes everything on exit; pending awaits
    then raise ``QueueClosed``). One Queue serves any number of concurrent callers.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://hosts/service``
            or ``redis+cluster://hosts``; without one, ``AIOQUEUE_REDIS_URL`` or
            ``redis://localhost:6379/0``.
        name: the queue jobs go to unless their task or options say otherwise.
        serializer: how arguments and results are encoded: ``"msgpack"`` (default),
            ``"json"``, ``"pickle"`` (opt-in: unsafe with an untrusted Redis) or a
            ``Serializer``. Workers must use the same one.
        timeout: how long an enqueue may take before it raises ``RedisUnavailable``.
        result_ttl: how long ``abort()`` keeps the aborted job's record (seconds;
            0 not kept, negative until deleted). Results themselves follow the task's
            ``result_ttl``.
        max_payload: largest encoded job in bytes (``PayloadTooLarge``); None: no limit.
        max_length: most queued + scheduled jobs a queue may hold; an enqueue past it
            raises ``QueueFull``, or with ``wait_when_full`` waits (up to ``timeout``).
        wait_when_full: wait for room instead of raising ``QueueFull``.
        signing_key: sign every job (HMAC-SHA256 of its queue, id, lock and payload) for
            workers that verify; a list of keys signs with the first (key rotation).
        durable: an enqueue returns only once a replica has the jobs too (``WAIT 1``),
            or raises ``NotReplicated`` after ``replica_timeout`` seconds. Without it an
            acknowledged enqueue lives on the primary alone until replication catches up
            (microseconds to milliseconds): a primary lost in that window loses it, even
            with ``appendfsync always``, since the replica promoted in its place never had it.
        replica_timeout: seconds a durable enqueue waits for a replica.
        max_connections: the most connections the Queue holds to Redis (per node on
            a cluster), whatever the number of concurrent callers: one carries results,
            the others every call, pipelined. A durable enqueue, and your own commands
            on ``queue.redis``, take a connection of a pool of that size apart, and wait
            for a free one.
        health_check_interval: seconds of silence on the results connection after
            which it is pinged; twice that with no answer and it is replaced (a link
            dropped without a FIN, by a NAT or a firewall).
        middleware: hooks around each enqueue (``aioqueue.middleware``), in order.
        events_maxlen: entries each queue's event stream keeps, approximately, when
            this Queue's calls add to it (as the workers' setting; 0: none written).

    Attributes:
        url: the URL given (or found in the environment).
        name: the default queue.
        serializer: the ``Serializer`` in use.
        timeout: as given.
        result_ttl: as given.
        max_payload: as given.
        max_length: as given (0: no limit).
        wait_when_full: as given.
        signing_key: as given.
        max_connections: as given.
        health_check_interval: as given.
        middleware: as given.
        events_maxlen: as given.
        redis: a redis-py client on the same Redis, for your own commands (its pool
            is apart from the connections enqueues share).
        scripts: the typed wrappers of the Functions library (internal).
        client_id: this Queue's random id, the name of its results channel.
        waiter: the results subscription (internal; ``await job`` uses it).

    Raises:
        ConfigurationError: a setting that cannot work (``max_connections`` below 2, ...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = DEFAULT_QUEUE,
        serializer: str | Serializer = "msgpack",
        timeout: float = 5.0,
        result_ttl: float = DEFAULT_RESULT_TTL,
        max_payload: int | None = 1 << 20,
        max_length: int | None = None,
        wait_when_full: bool = False,
        signing_key: signing.SigningKeys | None = None,
        durable: bool = False,
        replica_timeout: float = 1.0,
        max_connections: int = 4,
        health_check_interval: float = 2.0,
        middleware: Iterable[object] = (),
        events_maxlen: int = EVENTS_MAXLEN,
    ) -> None:
        url = url or default_url()
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise ConfigurationError(f"max_connections must be an int, not {max_connections!r}")
        if max_connections < 2:
            raise ConfigurationError(
                f"max_connections must be 2 or more (one for results), not {max_connections}"
            )
        if not 0.01 <= health_check_interval < float("inf"):
            raise ConfigurationError(
                f"health_check_interval must be a number of seconds, not {health_check_interval!r}"
            )
        self.url = url
        self.max_connections = max_connections
        self.health_check_interval = health_check_interval
        self._replicated = replica_timeout if durable else None
        self.name = check_queue_name(name)
        self.serializer = get_serializer(serializer)
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.max_payload = max_payload
        self.max_length = max_length or 0
        self.wait_when_full = wait_when_full
        self.signing_key = signing_key
        self._signer = signing.Signer(signing_key) if signing_key is not None else None
        self.middleware = tuple(with_installed(middleware))
        hooks = Hooks(self.middleware)
        self._hooks = ProducerHooks(hooks) if hooks.enqueues else None
        # one client: the lane and the results subscription take their connections
        # from its settings, outside its pool (which serves durable enqueues and users)
        self.redis: RedisClient = connect_any(
            url, connect_timeout=timeout, max_connections=max_connections, blocking=True
        )
        self._listen_redis: RedisClient | None = (
            connect_any(url, connect_timeout=timeout)
            if isinstance(self.redis, ClusterClient)
            else None
        )
        self.scripts = Scripts(
            self.redis, timeout, max_links=max_connections - 1, events_maxlen=events_maxlen
        )
        self.events_maxlen = events_maxlen
        self.client_id = secrets.token_hex(8)
        self._waiter: ResultWaiter | None = None
        self._prepared: set[str] = set()
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Queue:
        stack = contextlib.AsyncExitStack()
        try:
            with mapped_errors(self.url):
                await self.scripts.load()
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._close_connections)
            stack.callback(tg.cancel_scope.cancel)
            waiter = (
                ShardedResultWaiter(self, self._listen_redis, self.client_id)
                if isinstance(self._listen_redis, ClusterClient)
                else ResultWaiter(self, self.redis, self.client_id)
            )
            # first on the way out: pending awaits end before the connections do
            stack.push_async_callback(waiter.close)
            with mapped_errors(self.url), deadline(self.timeout):
                await tg.start(waiter.run)
        except BaseException:
            await stack.aclose()
            raise
        self._waiter = waiter
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            stack, self._stack, self._waiter = self._stack, None, None
            await stack.aclose()

    async def read(self, call: Callable[[RedisClient], Awaitable[T]]) -> T:
        """One plain Redis read, bounded by ``timeout`` like every call the client makes."""
        with mapped_errors(self.url), deadline(self.timeout):
            return await call(self.redis)

    async def command(self, *args: Any) -> Any:
        """One plain command on the Queue's shared connections (``Job.info``, ``status``)."""
        if self._stack is None:
            raise QueueClosed("the Queue is not open: use `async with Queue(...) as queue:`")
        with mapped_errors(self.url):
            return await self.scripts.read(*args)

    async def _close_connections(self) -> None:
        await self.scripts.aclose()
        await self.redis.aclose()
        if self._listen_redis is not None:
            await self._listen_redis.aclose()

    async def _prepare(self, queue: str) -> None:
        """Once per queue, before its first enqueue: results of its jobs can reach us."""
        if self._waiter is not None:
            with deadline(self.timeout):
                await self._waiter.prepare(queue)
            self._prepared.add(queue)

    @property
    def waiter(self) -> ResultWaiter:
        """The results subscription; only while the Queue is open."""
        if self._waiter is None:
            raise QueueClosed("the Queue is not open: use `async with Queue(...) as queue:`")
        return self._waiter

    def _encode(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        job_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[str, EnqueueWire]:
        # the settings read at each call: they are public attributes, settable any time
        return encode_call(
            task, args, kwargs, self.name, self.serializer, self.max_payload, self._signer,
            job_id, headers,
        )  # fmt: skip

    async def _send(
        self,
        queue: str,
        batch: list[EnqueueWire],
        fresh: bool = False,
        first: Started | None = None,
    ) -> list[str]:
        """fresh: the ids were made up here (see ``Scripts.enqueue``).
        first: the failed first try of a single job's enqueue (see ``enqueue``)."""
        try:  # what mapped_errors does, without a context manager on the hottest path
            if queue not in self._prepared:
                await self._prepare(queue)
            if not self.wait_when_full:
                return await self.scripts.enqueue(
                    queue,
                    batch,
                    self.max_length,
                    replicated=self._replicated,
                    fresh_ids=fresh,
                    first=first,
                )
            # backpressure: wait for room, with backoff, until the client's timeout
            backoff = Backoff(FULL_FIRST, FULL_MOST)
            with anyio.move_on_after(self.timeout):
                while True:
                    try:
                        return await self.scripts.enqueue(
                            queue, batch, self.max_length, replicated=self._replicated
                        )
                    except QueueFull:
                        await backoff.wait()
            raise QueueFull(f"queue {queue!r} stayed full for {self.timeout}s")
        except AioqueueError:
            raise
        except UNAVAILABLE as exc:
            raise unavailable(self.url, exc) from exc
        except ResponseError as exc:
            raise refusal(exc) from exc

    @overload
    async def enqueue(self, task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...
    @overload
    async def enqueue(self, task: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...
    async def enqueue(self, task: Task[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Adds one job; returns its handle (the existing job's, if the id is taken)."""
        if isinstance(task, str):
            task = task_ref(task)
        if self._hooks is not None:
            return await self._hooks.enqueue(self, task, (task, args, kwargs))
        queue, wire = self._encode(task, args, kwargs)
        created = await self._send_one(queue, wire, task.defaults.job_id is None)
        return Job(self, queue, wire[0], created)

    async def _send_one(self, queue: str, wire: EnqueueWire, fresh: bool) -> bool:
        """Sends one encoded job; True when it was created (False: the id was taken)."""
        if (
            queue in self._prepared
            and not self.max_length
            and not self.wait_when_full
            and self._replicated is None
        ):
            # the hot path: the job joins a merged call at once and this coroutine
            # awaits its reply itself, not through four more coroutines (the
            # settings read here, not kept: they are attributes anyone may set)
            started = self.scripts.start_enqueue(queue, wire)
            if started is not None:
                try:
                    reply = await started[0]
                except Exception:  # retried, or raised as our error, by the full path
                    (status,) = await self._send(queue, [wire], fresh, started)
                    return status == "new"
                return bool(reply == b"new")
        (status,) = await self._send(queue, [wire], fresh)
        return status == "new"

    async def enqueue_many(self, calls: Iterable[Call[R]]) -> list[Job[R]]:
        """Adds many jobs in one round trip; handles come back in the same order."""
        if self._hooks is not None:
            listed = [(call.task, call.args, call.kwargs) for call in calls]
            return await self._hooks.enqueue_many(self, listed) if listed else []
        return await self._store([self._encode(c.task, c.args, c.kwargs) for c in calls])

    async def _store(self, encoded: list[tuple[str, EnqueueWire]]) -> list[Job[Any]]:
        """Sends encoded jobs: one call per queue among them."""
        if not encoded:
            return []
        queue = encoded[0][0]
        if all(q == queue for q, _ in encoded):  # the common case: one queue, one call
            statuses = await self._send(queue, [wire for _, wire in encoded])
            return [
                Job(self, queue, wire[0], status == "new")
                for (_, wire), status in zip(encoded, statuses, strict=True)
            ]
        by_queue: dict[str, list[EnqueueWire]] = {}
        order: list[tuple[str, int]] = []
        for queue, wire in encoded:
            batch = by_queue.setdefault(queue, [])
            order.append((queue, len(batch)))
            batch.append(wire)
        by_status, errors = await send_per_queue(self._send, by_queue)
        if errors:
            stored: list[Job[Any]] = [
                Job(self, q, by_queue[q][i][0], by_status[q][i] == "new")
                for q, i in order
                if q in by_status
            ]
            not_stored = [by_queue[q][i][0] for q, i in order if q in errors]
            first = errors[next(q for q, _ in order if q in errors)]
            raise NotAllEnqueued.of(first, stored=stored, not_stored=not_stored, errors=errors)
        return [
            Job(self, queue, by_queue[queue][i][0], by_status[queue][i] == "new")
            for queue, i in order
        ]

    def job(self, job_id: str, queue: str | None = None) -> Job[Any]:
        """A handle on an existing job by id (for example one a web request enqueued)."""
        return Job(self, check_queue_name(queue or self.name), check_job_id(job_id))
