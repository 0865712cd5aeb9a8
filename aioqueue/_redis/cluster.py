"""Redis Cluster: the client, library loading on every primary, and per-node connections.

URL: ``redis+cluster://[user:password@]host:port[,host:port...][?options]``
(``rediss+cluster://`` for TLS). The hosts are startup nodes: any few nodes of
the cluster; the rest is discovered with ``CLUSTER SLOTS``.

Every key of a queue shares the hash tag ``{queue}``, so each Function call
touches one slot and is routed to the primary that owns it; different queues
spread over the cluster. What cannot be a plain routed command lives here:

- the Functions library is loaded on every primary (and again whenever a call
  meets "Function not found": a new primary after resharding has no library);
- a blocking wait over queues in different slots (``ClusterWaker``);
- commands that must share one connection with the FCALL they follow
  (``WAIT`` for durable enqueues) and pub/sub, which go over plain
  connections to one node (``node_client``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, ResponseError, SlotNotCoveredError

from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff, deadline
from aioqueue._redis.urls import split_multi_host
from aioqueue.errors import ConfigurationError, RedisUnavailable

__all__ = ["ClusterClient", "ClusterWaker", "connect_cluster", "is_cluster_url", "load_library"]

log = structlog.get_logger("aioqueue.cluster")

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}

# URL query options passed on to every connection, with their types
_OPTIONS = {
    "socket_connect_timeout": float,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "client_name": str,
}


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Startup nodes and connection options of a ``redis+cluster://`` URL."""
    parsed = split_multi_host(url, SCHEMES, "cluster")
    parts, nodes = parsed.parts, parsed.hosts
    if parts.path not in ("", "/", "/0"):
        raise ConfigurationError("Redis Cluster has only database 0")
    kwargs: dict[str, Any] = dict(parsed.auth)
    for name, value in parse_qsl(parts.query):
        if name not in _OPTIONS:
            raise ConfigurationError(f"unknown cluster URL option {name!r}")
        kwargs[name] = _OPTIONS[name](value)
    return nodes, kwargs


class ClusterClient(RedisCluster):
    """``RedisCluster`` that routes FCALL without asking the server where its keys are.

    redis-py finds FCALL's keys with ``COMMAND GETKEYS`` (FCALL's key positions
    are "movable"): two extra round trips per call, each carrying the whole
    payload again. Every FCALL aioqueue makes has its one key (the queue's
    prefix) right after ``numkeys``, so the slot is computed locally, as
    redis-py already does for EVAL.
    """

    def __init__(self, *args: Any, node_options: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # options for the plain per-node connections (pub/sub, FCALL + WAIT)
        self.node_options = node_options
        self._node_clients: dict[str, Redis] = {}

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() in ("FCALL", "FCALL_RO") and len(args) >= 3 and int(args[1]) >= 1:
            return self.keyslot(args[2])
        return await super()._determine_slot(command, *args)

    def node_client(self, node: ClusterNode) -> Redis:
        """A plain client to one node, kept for the life of this cluster client."""
        client = self._node_clients.get(node.name)
        if client is None:
            client = Redis(host=node.host, port=int(node.port), **self.node_options)
            self._node_clients[node.name] = client
        return client

    async def owner_of(self, key: str) -> ClusterNode:
        """The primary that owns ``key``'s slot now.

        A cheap keyed read first, so that a moved slot (MOVED) or a dead node
        (connection error) refreshes redis-py's slot map before it is consulted.
        """
        await self.exists(key)
        return self.slot_owner(key)

    def slot_owner(self, key: str) -> ClusterNode:
        """The primary that owns ``key``'s slot in the slot map as last seen."""
        node = self.get_node_from_key(key)
        if node is None:
            raise SlotNotCoveredError(f"no node serves the slot of {key!r}")
        return node

    def random_node(self) -> ClusterNode:
        return random.choice(self.get_nodes())

    async def aclose(self) -> None:
        clients, self._node_clients = self._node_clients, {}
        for client in clients.values():
            await client.aclose()
        await super().aclose()
        # redis-py skips closing when a failed command has flagged the client for
        # re-discovery; the nodes' connections are still open then
        await self.nodes_manager.aclose()
        await self.nodes_manager.aclose("startup_nodes")


async def load_library(cluster: RedisCluster, library: str) -> None:
    """Loads the Functions library on every primary; "already exists" is success.

    Replicas get it through replication. A node that becomes primary later
    (failover) already has it; one that joins later (resharding) gets it when
    a call there meets "Function not found" and the caller loads again.
    """
    await initialize(cluster)
    for node in cluster.get_primaries():
        try:
            await cluster.execute_command("FUNCTION", "LOAD", library, target_nodes=node)
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise


async def initialize(cluster: RedisCluster) -> None:
    """Discovers the cluster (a no-op once done, unless a refresh is due)."""
    try:
        await cluster.initialize()
    except RedisClusterException as exc:  # no startup node answered
        raise RedisUnavailable(f"Redis Cluster is unavailable: {exc}") from exc


@contextlib.asynccontextmanager
async def any_node_pubsub(cluster: ClusterClient) -> AsyncIterator[PubSub]:
    """A plain subscriber on one node, any: plain PUBLISH reaches every node of a cluster."""
    await initialize(cluster)
    async with cluster.node_client(cluster.random_node()).pubsub() as pubsub:
        yield pubsub


def connect_cluster(url: str, *, connect_timeout: float = 5.0, **kwargs: Any) -> ClusterClient:
    """A cluster client for ``url``; no per-read socket timeout (see ``connection.connect``)."""
    if not hasattr(PubSub, "ssubscribe"):  # results travel over sharded pub/sub
        raise ConfigurationError(
            "Redis Cluster needs redis-py 8.0 or newer (asyncio sharded pub/sub):"
            " pip install 'aioqueue[cluster]'"
        )
    nodes, options = parse_cluster_url(url)
    options.setdefault("socket_connect_timeout", connect_timeout)
    options["socket_timeout"] = None
    options["health_check_interval"] = 0
    kwargs.pop("max_connections", None)  # per node in a cluster; redis-py's default is fine
    kwargs.pop("blocking", None)
    return ClusterClient(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        node_options=dict(options),
        **options,
        **kwargs,
    )


class ClusterWaker:
    """An idle worker's blocking wait over wake lists that live in different slots.

    One BLPOP can only name keys of one slot, so each queue gets a task that
    blocks on its own wake list, routed to the node that owns it; the first
    wake ends the worker's wait. The tasks block only while the worker is idle
    (they would otherwise pop wake tokens the worker has no use for), and a
    token one of them pops while the worker is busy is remembered, so the next
    wait returns at once and no wake is lost.

    sources: per queue, the keys (all in its slot) to block on, asked afresh
    for each BLPOP: which ones the worker listens to changes with its free
    CPU slots (see aioqueue._worker.dispatch).
    """

    def __init__(
        self, cluster: RedisCluster, sources: Sequence[Callable[[], list[str]]], block: float
    ) -> None:
        self._cluster = cluster
        self._sources = sources
        self._block = block
        self._idle = anyio.Event()
        self._wake = anyio.Event()
        self._woken = False

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for source in self._sources:
                tg.start_soon(self._watch, source)

    async def _watch(self, source: Callable[[], list[str]]) -> None:
        backoff = Backoff(0.1, 5.0)
        while True:
            await self._idle.wait()
            keys = source()
            try:
                # a stalled link must not wedge the task: BLPOP's own timeout plus slack
                with deadline(self._block + 10):
                    got = await self._cluster.blpop(keys, timeout=self._block)
                backoff.reset()
            except (*UNAVAILABLE, ResponseError) as exc:  # ResponseError: a planted key
                log.warning(
                    "worker.wake_wait_failed", key=keys[0], error=str(exc), retry_in=backoff.delay
                )
                await backoff.wait()
                continue
            if got is not None:
                self._woken = True
                self._wake.set()

    async def wait(self, timeout: float) -> None:
        """Returns on the first wake of any queue, or after ``timeout`` seconds."""
        if not self._woken:
            self._wake = anyio.Event()
            self._idle.set()
            with anyio.move_on_after(timeout):
                await self._wake.wait()
            self._idle = anyio.Event()
        self._woken = False
