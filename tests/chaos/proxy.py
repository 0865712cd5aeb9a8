"""A TCP proxy on loopback that cuts and stalls connections on demand."""

from __future__ import annotations

import asyncio
import contextlib


class ChaosProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        # per connection: (client -> server flows, server -> client flows)
        self._frozen: dict[asyncio.StreamWriter, tuple[asyncio.Event, asyncio.Event]] = {}
        self.cuts = 0
        self.stalls = 0
        self.accepted = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, alive: asyncio.Event
    ) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # a stall holds bytes back, the link stays open
                await alive.wait()  # a frozen link never forwards again, and never closes
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.accepted += 1
        self._conns.update((writer, up_writer))
        requests, replies = asyncio.Event(), asyncio.Event()
        requests.set()
        replies.set()
        self._frozen[writer] = (requests, replies)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, requests), self._pipe(up_reader, writer, replies)
            )
        finally:
            self._conns.discard(writer)
            self._conns.discard(up_writer)
            self._frozen.pop(writer, None)

    def cut(self) -> None:
        """Drops every open connection at once."""
        self.cuts += 1
        for writer in list(self._conns):
            with contextlib.suppress(Exception):
                writer.transport.abort()

    def freeze(self, *, replies_only: bool = False) -> int:
        """Every open connection stops forwarding for good, without a FIN or a reset
        (a NAT or firewall that forgot the flow); new connections flow. Returns how
        many were frozen. replies_only: requests still reach Redis, answers never
        come back (a command that ran, its reply lost)."""
        for requests, replies in self._frozen.values():
            replies.clear()
            if not replies_only:
                requests.clear()
        return len(self._frozen)

    async def stall(self, seconds: float) -> None:
        """Holds all traffic for ``seconds`` without closing anything."""
        self.stalls += 1
        self._flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
