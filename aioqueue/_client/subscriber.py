"""A pub/sub connection that notices when it is gone, and comes back at once.

A subscriber only ever reads, so a link that dies without a FIN (a NAT or a
firewall forgot the flow, a proxy stopped forwarding) would look like a quiet
channel for ever. So: TCP keepalive on the socket, and a PING after
``health_interval`` seconds without a byte; when nothing at all arrives for
twice that long, the connection is taken for dead, closed, and opened again.
A connection closed by the server (restart, ``CLIENT KILL``) is noticed the
moment it closes. Reconnecting starts at once and backs off only while Redis
refuses; once subscribed again, ``on_ready`` lets the owner ask again for
whatever it waited for (messages published meanwhile were lost).

One subscriber carries any number of channels (``SUBSCRIBE``), or of shard
channels on one cluster node (``SSUBSCRIBE``, one command per slot).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import structlog
from redis.asyncio import Redis
from redis.exceptions import AskError, MovedError, ResponseError

from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.link import Link, open_link, pack
from aioqueue._redis.retry import Backoff

__all__ = ["Subscriber"]

log = structlog.get_logger("aioqueue.results")

RECONNECT_BASE = 0.02
RECONNECT_CAP = 0.5


class Subscriber:
    """Subscriptions on one connection to ``redis`` (one Redis, or one cluster node).

    on_message(data): the payload of every message on any of the channels.
    on_ready(first): every channel is subscribed (again, unless ``first``).
    on_unready(): the connection is gone; subscriptions are being made again.
    on_silent(opened_at): the connection was found dead by silence; ``opened_at``
    is its loop time of opening (other connections of that age may be dead too).
    on_moved(channel): Redis dropped a shard channel (its slot moved away).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        on_message: Callable[[bytes], None],
        on_ready: Callable[[bool], None] = lambda first: None,
        on_unready: Callable[[], None] = lambda: None,
        on_silent: Callable[[float], None] = lambda opened_at: None,
        on_moved: Callable[[str], None] = lambda channel: None,
        sharded: bool = False,
        health_interval: float = 2.0,
        label: str = "",
    ) -> None:
        self._redis = redis
        self._on_message = on_message
        self._on_ready = on_ready
        self._on_unready = on_unready
        self._on_silent = on_silent
        self._on_moved = on_moved
        self._sharded = sharded
        self._verb = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self.health_interval = health_interval
        self._label = label
        self.channels: set[str] = set()  # wanted
        self.refused: dict[str, Exception] = {}  # channel -> Redis's refusal
        self._confirmed: dict[str, asyncio.Event] = {}
        self._expect: deque[str] = deque()  # replies owed: a channel name or "" for PING
        self._link: Link | None = None
        self._lost = False
        self._changed = asyncio.Event()  # a confirmation came, or the link was lost
        self.connections = 0  # opened so far
        self.pongs = 0  # health-check PINGs answered

    # -- subscriptions -------------------------------------------------------------------

    def _event(self, channel: str) -> asyncio.Event:
        event = self._confirmed.get(channel)
        if event is None:
            event = self._confirmed[channel] = asyncio.Event()
        return event

    async def subscribe(self, channel: str) -> None:
        """Returns once ``channel`` is subscribed (waits across reconnects); raises
        Redis's refusal when it refused the subscription (its ACL)."""
        event = self._event(channel)
        if channel not in self.channels:
            self.channels.add(channel)
            if self._link is not None and self._link.alive:
                self._send(self._verb, channel)
        await event.wait()
        self._raise_refusal(channel)

    def _raise_refusal(self, channel: str) -> None:
        refused = self.refused.pop(channel, None)
        if refused is not None:
            self.channels.discard(channel)
            self._confirmed.pop(channel, None)
            raise refused

    def is_subscribed(self, channel: str) -> bool:
        event = self._confirmed.get(channel)
        return event is not None and event.is_set()

    def forget(self, channel: str) -> None:
        """Stops asking for ``channel`` after a reconnect (Redis already dropped it)."""
        self.channels.discard(channel)
        event = self._confirmed.pop(channel, None)
        if event is not None:
            event.set()  # a caller waiting for it looks again (the owner re-routes it)

    def _send(self, verb: bytes, channel: str) -> None:
        assert self._link is not None
        self._expect.append(channel)
        self._link.write([pack(verb, channel)])

    # -- replies -------------------------------------------------------------------------

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            channel = self._expect.popleft() if self._expect else ""
            log.warning("results.subscribe_refused", channel=channel, error=str(reply))
            if not channel:
                return
            if isinstance(reply, MovedError | AskError):
                # a shard channel this node does not own (any more): its owner re-routes it
                self.forget(channel)
                self._on_moved(channel)
            else:
                # an ACL without the channel, say: whoever waits for it hears why
                self.refused[channel] = reply
                self._event(channel).set()
                self._changed.set()
            return
        if reply == b"PONG":
            # RESP3 (redis-py 8's default) answers a PING on a subscribed connection with a
            # plain PONG; RESP2 with ["pong", ""] (below). Either way, the PING is answered.
            self._pong()
            return
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind in (b"message", b"smessage") and len(reply) == 3:
            self._on_message(reply[2])
        elif kind in (b"subscribe", b"ssubscribe") and len(reply) == 3:
            if self._expect:
                self._expect.popleft()
            channel = reply[1].decode(errors="replace")
            if channel in self.channels:
                self._event(channel).set()
                self._changed.set()
        elif kind == b"pong":
            self._pong()
        elif kind == b"sunsubscribe" and len(reply) == 3:
            # not asked for: the slot moved to another node, or was deleted
            channel = reply[1].decode(errors="replace")
            self.forget(channel)
            self._on_moved(channel)

    def _pong(self) -> None:
        if self._expect:
            self._expect.popleft()
        self.pongs += 1

    def _on_link_lost(self, link: Link, exc: BaseException | None) -> None:
        if link is self._link:
            self._lost = True
            self._changed.set()

    # -- the connection ------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keeps the subscriptions up until cancelled; ready after the first subscribe."""
        backoff = Backoff(RECONNECT_BASE, RECONNECT_CAP, jitter=True)
        first = True
        failing = False
        while True:
            self._lost = False
            try:
                link = await open_link(self._redis, self._on_reply, self._on_link_lost)
            except UNAVAILABLE as exc:
                if not failing:
                    log.warning("results.disconnected", where=self._label, error=str(exc))
                    failing = True
                await backoff.wait()
                continue
            self.connections += 1
            self._link = link
            try:
                if await self._subscribe_all(link):
                    backoff.reset()
                    if failing or not first:
                        log.info("results.resubscribed", where=self._label)
                    failing = False
                    self._on_ready(first)
                    if first:
                        first = False
                        task_status.started()
                    await self._watch_health(link)
            except ResponseError as exc:
                if first:
                    raise  # refused at start: the Queue's entry says why
                # refused later (an ACL changed): keep trying, a few times a second at most
                log.warning("results.subscribe_refused", where=self._label, error=str(exc))
                await anyio.sleep(RECONNECT_CAP)
            finally:
                self._link = None
                self._expect.clear()
                # subscriptions are gone with the link; waiters on unset events stay put
                for channel, event in list(self._confirmed.items()):
                    if event.is_set():
                        self._confirmed[channel] = asyncio.Event()
                link.close()
                if not first:
                    self._on_unready()

    async def _subscribe_all(self, link: Link) -> bool:
        """Subscribes every wanted channel; False when the link died meanwhile."""
        for channel in sorted(self.channels):
            self._send(self._verb, channel)
        with anyio.move_on_after(2 * self.health_interval):
            while not self._lost:
                for channel in list(self.refused):
                    self._raise_refusal(channel)  # at start: the Queue's entry raises it
                if all(self.is_subscribed(c) for c in self.channels):
                    return True
                self._changed.clear()
                await self._changed.wait()
            return False
        log.warning("results.subscribe_timed_out", where=self._label)
        return False

    async def _watch_health(self, link: Link) -> None:
        """Returns when the link is lost, or silent for twice ``health_interval``."""
        interval = self.health_interval
        loop = asyncio.get_running_loop()
        while True:
            with anyio.move_on_after(interval / 2):
                while not self._lost:
                    self._changed.clear()
                    await self._changed.wait()
                return
            quiet = loop.time() - link.received_at
            if quiet >= 2 * interval:
                log.warning("results.link_silent", where=self._label, quiet_for=round(quiet, 2))
                self._on_silent(link.opened_at)
                return
            if quiet >= interval and "" not in self._expect:
                self._expect.append("")
                link.write([pack(b"PING")])
