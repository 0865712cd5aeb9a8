"""Results on a Redis Cluster: sharded pub/sub, one subscriber per node.

On one Redis, a client subscribes once to ``aq:client:<id>`` and ``finish``
publishes there. On a cluster, plain PUBLISH is broadcast over the cluster bus
to every node, so each result message costs every node of the cluster some
work, and total result throughput stops growing with the number of shards.
Sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7) keeps a message inside the
shard that owns its channel's slot. The channel is
``aq:{<queue>}:client:<id>``: it carries the queue's hash tag, so the
``finish`` Function (which runs in that slot) may publish to it. The client
id registered with ``watch`` starts with ``s:``, which tells the Functions to
SPUBLISH.

Each queue the client awaits jobs of adds one shard channel, subscribed (on
the first ``await``, or before the first enqueue) on the connection of the
primary that owns the queue's slot: one subscriber connection per node
carries the channels of every queue it owns, so the connections a client
holds are bounded by the size of the cluster, not by the queues it touched.

When a subscription is lost (its node's connection dropped, or the slot moved
away and Redis sent ``sunsubscribe``), the client asks the cluster where the
slot lives now, subscribes there and asks again for every job of that queue
it waits for: nothing published meanwhile is missed.
"""

from __future__ import annotations

import anyio
import anyio.abc
import structlog
from redis.asyncio.cluster import ClusterNode

from aioqueue._client.backend import WaiterHost
from aioqueue._client.subscriber import Subscriber
from aioqueue._client.waiter import ResultWaiter
from aioqueue._protocol.keys import shard_client_channel
from aioqueue._redis.cluster import ClusterClient
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff

__all__ = ["ShardedResultWaiter"]

log = structlog.get_logger("aioqueue.results")

SHARDED = "s:"  # client id prefix: completions go to the sharded channel


class ShardedResultWaiter(ResultWaiter):
    """The result waiter of a cluster client: a sharded subscriber per node."""

    def __init__(self, queue: WaiterHost, cluster: ClusterClient, token: str) -> None:
        super().__init__(queue, cluster, SHARDED + token)
        self._cluster = cluster
        self._token = token
        self._nodes: dict[str, Subscriber] = {}  # node name -> its subscriber
        self._where: dict[str, str] = {}  # channel -> node name
        self._queues: dict[str, str] = {}  # channel -> queue
        self._scopes: dict[str, anyio.CancelScope] = {}  # node name -> its subscriber's scope

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        """Subscriptions open on demand, per queue (see ``_ready``)."""

    @property
    def subscribers(self) -> int:
        return len(self._nodes)

    async def _ready(self, queue: str) -> None:
        channel = shard_client_channel(queue, self._token)
        self._queues[channel] = queue
        while True:
            name = self._where.get(channel)
            if name is None:
                node = await self._cluster.owner_of(channel)
                name = self._where[channel] = node.name
                sub = self._nodes.get(name)
                if sub is None:
                    sub = self._nodes[name] = self._node_subscriber(node.name, node)
            sub = self._nodes[name]
            if sub.is_subscribed(channel):
                return
            await sub.subscribe(channel)
            if self._where.get(channel) == name:
                return
            # moved while we subscribed: ask again

    def _node_subscriber(self, name: str, node: ClusterNode) -> Subscriber:
        assert self._tg is not None
        sub = Subscriber(
            self._cluster.node_client(node),
            sharded=True,
            on_message=self._deliver,
            on_ready=lambda first: self._node_ready(name, first),
            on_unready=lambda: self._node_lost(name),
            on_moved=self._moved,
            health_interval=self._queue.health_check_interval,
            label=f"{self.client_id}@{name}",
        )
        scope = self._scopes[name] = anyio.CancelScope()

        async def run() -> None:
            with scope:
                await sub.run()

        self._tg.start_soon(run)
        return sub

    def _node_lost(self, name: str) -> None:
        if self._tg is not None and not self._closed:
            self._tg.start_soon(self._reroute, name)

    async def _reroute(self, name: str) -> None:
        """A node's subscriber lost its connection: a channel whose slot another
        node now owns (a failover) follows it; the rest wait for the reconnect.
        A subscriber left with no channel is closed."""
        backoff = Backoff(0.1, 1.0)
        while not self._closed:
            sub = self._nodes.get(name)
            channels = [c for c, where in self._where.items() if where == name]
            if sub is None:
                return
            if not channels:
                self._nodes.pop(name, None)
                self._scopes.pop(name, anyio.CancelScope()).cancel()
                return
            if all(sub.is_subscribed(c) for c in channels):
                return  # reconnected to the same node
            try:
                for channel in channels:
                    if (await self._cluster.owner_of(channel)).name != name:
                        sub.forget(channel)
                        self._moved(channel)
            except UNAVAILABLE as exc:
                retry_in = backoff.delay
                log.warning("results.disconnected", node=name, error=str(exc), retry_in=retry_in)
            await backoff.wait()

    async def prepare(self, queue: str) -> None:
        """Subscribes before the first job of ``queue`` is enqueued, as a single-Redis
        client is subscribed before any: otherwise a job could end while the
        subscription is still being made, and a result not stored would be missed."""
        await self._ready(queue)

    def _node_ready(self, name: str, first: bool) -> None:
        """A node's subscriber connected again: its queues' jobs are asked for again."""
        if first or self._tg is None:
            return
        for channel, where in list(self._where.items()):
            if where == name:
                self._tg.start_soon(self._rewatch, self._queues[channel], self._generation)

    def _moved(self, channel: str) -> None:
        """Redis dropped the channel (its slot moved, or the node refused it)."""
        self._where.pop(channel, None)
        queue = self._queues.get(channel)
        if queue is not None and self._tg is not None:
            log.info("results.slot_moved", client=self.client_id, queue=queue)
            self._tg.start_soon(self._follow, queue)

    async def _follow(self, queue: str) -> None:
        backoff = Backoff(0.05, 1.0)
        while not self._closed:
            try:
                await self._ready(queue)
            except UNAVAILABLE as exc:
                log.warning(
                    "results.disconnected", queue=queue, error=str(exc), retry_in=backoff.delay
                )
                await backoff.wait()
                continue
            await self._rewatch(queue, self._generation)
            return
