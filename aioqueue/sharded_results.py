"""Results on a Redis Cluster: sharded pub/sub, one subscription per queue.

On one Redis, a client subscribes once to ``aq:client:<id>`` and ``finish``
publishes there. On a cluster, plain PUBLISH is broadcast over the cluster bus
to every node, so each result message costs every node of the cluster some
work, and total result throughput stops growing with the number of shards.
Sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7) keeps a message inside the
shard that owns its channel's slot. The channel is
``aq:{<queue>}:client:<id>``: it carries the queue's hash tag, so the
``finish`` Function (which runs in that slot) may publish to it.

The cost is fan-out on the client side: one subscription connection per queue
the client awaits jobs of (opened on the first ``await``), to the primary that
owns the queue's slot, instead of one per client. The client id registered
with ``watch`` starts with ``s:``, which tells the Functions to SPUBLISH.

When a subscription is lost (the node died, or the slot moved away and Redis
sent ``sunsubscribe``), the client asks the cluster where the slot lives now,
subscribes there and asks again for every job of that queue it waits for, as
the single-Redis waiter does after a reconnect: nothing published meanwhile
is missed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc
import structlog

from aioqueue.cluster import ClusterClient
from aioqueue.connection import UNAVAILABLE
from aioqueue.keys import shard_client_channel
from aioqueue.results import ResultWaiter

if TYPE_CHECKING:
    from aioqueue.client import Queue

__all__ = ["ShardedResultWaiter"]

log = structlog.get_logger("aioqueue.results")

SHARDED = "s:"  # client id prefix: completions go to the sharded channel


class ShardedResultWaiter(ResultWaiter):
    """The result waiter of a cluster client: a sharded subscription per queue."""

    def __init__(self, queue: Queue, cluster: ClusterClient) -> None:
        super().__init__(queue, cluster)
        self._cluster = cluster
        self._token = self.client_id
        self.client_id = SHARDED + self._token
        self._ready_events: dict[str, anyio.Event] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # subscriptions open on demand, per queue, in this task group
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    async def _ready(self, queue: str) -> None:
        event = self._ready_events.get(queue)
        if event is None:
            if self._tg is None:
                raise RuntimeError("the result waiter is not running")
            event = self._ready_events[queue] = anyio.Event()
            self._tg.start_soon(self._listen, queue)
        await event.wait()

    async def prepare(self, queue: str) -> None:
        """Subscribes before the first job of ``queue`` is enqueued, as a single-Redis
        client is subscribed before any: otherwise a job could end while the
        subscription is still being made, and a result not stored would be missed."""
        if queue not in self._ready_events:
            await self._ready(queue)

    def _unready(self, queue: str) -> None:
        # waits that began while subscribed must see the new event only once it is
        # needed: replace the event only if it had been set
        if self._ready_events[queue].is_set():
            self._ready_events[queue] = anyio.Event()

    async def _listen(self, queue: str) -> None:
        channel = shard_client_channel(queue, self._token)
        backoff = 0.05
        first = True
        while True:
            try:
                node = await self._cluster.owner_of(channel)
                async with self._cluster.node_client(node).pubsub() as pubsub:
                    await pubsub.ssubscribe(channel)
                    async for msg in pubsub.listen():
                        kind = msg["type"]
                        if kind == "smessage":
                            self._deliver(msg["data"])
                        elif kind == "ssubscribe":
                            # also after redis-py reconnected on its own: ask again
                            if not first:
                                log.info("results.resubscribed", client=self.client_id, queue=queue)
                                await self._rewatch(queue)
                            first = False
                            backoff = 0.05
                            self._ready_events[queue].set()
                        elif kind == "sunsubscribe":
                            break  # Redis dropped us: the slot moved to another node
                log.info("results.slot_moved", client=self.client_id, queue=queue)
                self._unready(queue)
            except UNAVAILABLE as exc:
                self._unready(queue)
                log.warning("results.disconnected", queue=queue, error=str(exc), retry_in=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
