"""What tells Redis, and the worker, that a worker is alive and its deliveries still its own.

    heartbeat   every ``heartbeat_interval`` (``heartbeat.on_schedule``): one
                ``heartbeat`` call per queue registers the worker with its info,
                extends the leases of its deliveries, and answers which of them
                to stop (aborted, or handed to another worker: lost)
    aborts      a pub/sub listener on the queues' abort channels stops a running
                delivery at once, instead of at the next heartbeat
    deregister  at the end of a run, so that ``aioqueue info`` stops counting it

Like ``LockManager`` beside a BullMQ worker, it reads the run's deliveries and
never holds the worker itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import anyio
import msgspec
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from aioqueue._protocol.functions import VERSION, Scripts
from aioqueue._protocol.garbage import abort_target
from aioqueue._protocol.keys import QueueKeys
from aioqueue._protocol.versions import LIBRARY_TTL
from aioqueue._redis.cluster import ClusterClient, any_node_pubsub
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff
from aioqueue._worker.deliveries import Deliveries
from aioqueue._worker.heartbeat import on_schedule
from aioqueue._worker.settings import WorkerSettings
from aioqueue._worker.stats import WorkerStats
from aioqueue.errors import RedisRefused

__all__ = ["Liveness"]

LIBRARY_BEAT_EVERY = 15.0  # seconds between library registrations (kept 60 s)

log = structlog.get_logger("aioqueue.worker")

REGISTRY_TTL = LIBRARY_TTL  # a worker that stops beating drops out of the registry after this
DEREGISTER_WITHIN = 2.0
LISTEN_FIRST, LISTEN_MOST = 0.1, 2.0  # seconds before the abort listener connects again


class Liveness:
    def __init__(
        self,
        worker_id: str,
        settings: WorkerSettings,
        scripts: Scripts,
        sub_redis: RedisClient,
        deliveries: Deliveries,
        stats: WorkerStats,
        started_at: float,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.scripts = scripts
        self._sub_redis = sub_redis
        self.deliveries = deliveries
        self.stats = stats
        self.started_at = started_at  # the run's start (wall clock): the dashboard's uptime
        self._library_refused = False
        self._library_beat_at = -LIBRARY_BEAT_EVERY  # the first heartbeat beats it too

    # -- heartbeat ------------------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        await on_schedule(self.beat, self.settings.heartbeat_interval, self._beat_failed)

    def _beat_failed(self, exc: Exception, retry_in: float) -> None:
        self.stats.loop_failed("heartbeat", exc, retry_in)

    async def beat(self) -> None:
        s = self.settings
        info = msgspec.json.encode(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(s.queues),
                "concurrency": s.concurrency,
                "running": len(self.deliveries),
                "done": self.stats.jobs_done,
                "seen": time.time(),
                "started": self.started_at,
                "lease": s.lease,
                "library": VERSION,  # the Functions library version it runs
            }
        )
        lease_ms = int(s.lease * 1000)
        for queue in s.queues:
            held = self.deliveries.in_queue(queue)
            stop = await self.scripts.heartbeat(
                queue, self.worker_id, lease_ms, info, int(REGISTRY_TTL * 1000), held
            )
            for token, reason in stop:
                running = self.deliveries.get(queue, token)
                if running is not None:
                    log.warning("job.stopping", job_id=running.job.id, queue=queue, reason=reason)
                    running.stop(reason)
        # so that a worker of another version keeps this library (versions.py)
        # once in LIBRARY_BEAT_EVERY, not every heartbeat: an idle worker sends about
        # one command a second (tests/test_processes.py), and the registry keeps a
        # version for a minute after its last beat
        now = time.monotonic()
        if not self._library_refused and now - self._library_beat_at >= LIBRARY_BEAT_EVERY:
            self._library_beat_at = now
            try:
                await self.scripts.library_beat(self.worker_id)
            except RedisRefused as exc:  # an ACL for the queues' keys only: once is enough
                self._library_refused = True
                log.warning("worker.library_beat_refused", error=str(exc))

    async def deregister(self) -> None:
        with anyio.move_on_after(DEREGISTER_WITHIN, shield=True):
            for queue in self.settings.queues:
                with contextlib.suppress(*UNAVAILABLE):
                    await self.scripts.deregister(queue, self.worker_id)
            if not self._library_refused:
                with contextlib.suppress(*UNAVAILABLE, RedisRefused):
                    await self.scripts.library_beat(self.worker_id, leaving=True)

    # -- aborts ---------------------------------------------------------------------

    async def abort_loop(self) -> None:
        channels = {QueueKeys(q).abort: q for q in self.settings.queues}
        backoff = Backoff(LISTEN_FIRST, LISTEN_MOST)
        while True:
            try:
                async with self._pubsub() as pubsub:
                    await pubsub.subscribe(*channels)
                    backoff.reset()
                    async for msg in pubsub.listen():
                        if msg["type"] == "message":
                            self._on_abort(channels, msg["channel"], msg["data"])
            except UNAVAILABLE as exc:
                log.warning(
                    "worker.abort_listener_disconnected", error=str(exc), retry_in=backoff.delay
                )
                await backoff.wait()
            except ResponseError as exc:
                self.stats.loop_failed("aborts", exc, backoff.delay)
                await backoff.wait()

    def _on_abort(self, channels: dict[str, str], channel: object, data: object) -> None:
        target = abort_target(channels, channel, data)  # None: not a job id (logged)
        if target is not None:
            self.deliveries.abort(*target)

    def _pubsub(self) -> contextlib.AbstractAsyncContextManager[PubSub]:
        if isinstance(self._sub_redis, ClusterClient):
            return any_node_pubsub(self._sub_redis)
        if isinstance(self._sub_redis, RedisCluster):
            raise TypeError("a cluster worker needs aioqueue._redis.cluster.ClusterClient")
        return self._sub_redis.pubsub()
