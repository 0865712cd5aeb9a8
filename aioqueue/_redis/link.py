"""One Redis connection read by a protocol of our own, for pipelined traffic.

redis-py opens the connection and does the handshake (TLS, AUTH, SELECT,
CLIENT SETNAME, Sentinel's primary lookup): everything that varies with the
URL stays redis-py's. Then the transport is handed to a ``Link``, which feeds
every byte that arrives into a hiredis reader and passes each complete reply
to a callback, in order. There is no read call per reply and no task per
connection: replies are parsed in the transport's own callback, so a
connection is read all the time, and a connection the server closed (a
restart, ``CLIENT KILL``, an idle ``timeout``) is known at once, not at the
next command sent on it.

Error replies become the same exception classes redis-py raises, and are
passed to the callback as values.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import hiredis
import structlog
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

__all__ = ["Link", "open_link", "pack"]

log = structlog.get_logger("aioqueue.link")

_INCOMPLETE = object()

# TCP keepalive: a peer that vanished without a FIN (a NAT or firewall dropped
# the flow) is found after about 10 + 3 x 3 s even on an idle connection.
KEEPALIVE = {
    getattr(socket, "TCP_KEEPIDLE", None): 10,
    getattr(socket, "TCP_KEEPINTVL", None): 3,
    getattr(socket, "TCP_KEEPCNT", None): 3,
}


def pack(*args: Any) -> bytes:
    """One command in Redis's wire format (hiredis, in C)."""
    packed: bytes = hiredis.pack_command(args)
    return packed


def as_error(reply: hiredis.ReplyError) -> Exception:
    """redis-py's exception for an error reply (ResponseError, OutOfMemoryError, ...)."""
    error: Exception = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


def _keepalive(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in KEEPALIVE.items():
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass  # a platform without these options keeps its defaults


class Link(asyncio.Protocol):
    """A connected Redis link: ``write`` bytes, replies go to ``on_reply``.

    on_reply(reply): each reply in order; error replies as exception values.
    on_lost(link, exc): once, when the connection is gone (closed by either side).
    """

    def __init__(
        self,
        conn: AbstractConnection,
        on_reply: Callable[[Any], None],
        on_lost: Callable[[Link, BaseException | None], None],
    ) -> None:
        self.conn = conn
        self.on_reply = on_reply
        self.on_lost = on_lost
        self.loop = asyncio.get_running_loop()
        self.opened_at = self.loop.time()
        self.received_at = self.opened_at  # when bytes last arrived
        self.alive = True
        self._reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
        writer = conn._writer
        assert writer is not None
        self.transport: asyncio.Transport = writer.transport  # type: ignore[assignment]
        self._stream_protocol = writer.transport.get_protocol()
        stream = conn._reader
        leftover = bytes(stream._buffer) if stream is not None else b""  # type: ignore[attr-defined]
        _keepalive(self.transport)
        self.transport.set_protocol(self)
        if leftover:
            self.data_received(leftover)

    def write(self, chunks: list[bytes]) -> None:
        if len(chunks) == 1:
            self.transport.write(chunks[0])
        else:
            self.transport.writelines(chunks)

    def data_received(self, data: bytes) -> None:
        self.received_at = self.loop.time()
        reader = self._reader
        reader.feed(data)
        on_reply = self.on_reply
        while True:
            reply = reader.gets()
            if reply is _INCOMPLETE:
                return
            if isinstance(reply, hiredis.ReplyError):
                reply = as_error(reply)
            try:
                on_reply(reply)
            except Exception:
                # a reply its owner could not place: what follows cannot be trusted
                log.exception("link.bad_reply", reply=repr(reply)[:200])
                self.close()
                return

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.alive:
            self.alive = False
            # redis-py's own protocol learns it too, so the connection object stays coherent
            self._stream_protocol.connection_lost(exc)  # type: ignore[arg-type]
            self.on_lost(self, exc)

    def close(self) -> None:
        """Closes the connection now (buffered writes are dropped)."""
        if self.alive:
            self.transport.abort()


async def open_link(
    redis: Redis,
    on_reply: Callable[[Any], None],
    on_lost: Callable[[Link, BaseException | None], None],
) -> Link:
    """A new connection from ``redis``'s settings (URL, auth, TLS, Sentinel), as a Link."""
    pool = redis.connection_pool
    conn: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.connect()  # type: ignore[no-untyped-call]
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    return Link(conn, on_reply, on_lost)
