"""What ends the supervisor's select() besides its children: signals and changed files.

Signal handlers only queue the number, and the reload watcher's thread only
queues its batch; both then write to one socket the loop selects on, and the
loop acts on what is queued once select() returns.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from aioqueue._supervise.reload import start_watching

__all__ = ["SignalQueue", "Wakeups"]

log = structlog.get_logger("aioqueue.supervisor")

HANDLED = ("SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD")


class SignalQueue:
    """Handlers for ``HANDLED`` from ``install()`` to ``close()``; the loop pops ``pending``."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1

    def install(self, wake_fd: int) -> None:
        for name in HANDLED:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handler)
        self._previous_fd = signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # nothing else is safe here: the loop acts on it once select() returns
        self.pending.append(signum)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Wakeups:
    """The loop's wake-up socket, its signal handlers and the ``--reload`` watcher,
    from ``open()`` to ``close()``; the loop pops ``signals.pending`` and ``reloads``."""

    def __init__(self, reload_dirs: Sequence[Path]) -> None:
        self.signals = SignalQueue()
        self.reloads: deque[list[str]] = deque()
        self._reload_dirs = list(reload_dirs)
        self._watcher: threading.Event | None = None
        self._read, self._write = socket.socketpair()

    def open(self, selector: selectors.BaseSelector) -> None:
        """Registers the socket with ``selector`` (its data: None) and starts listening."""
        self._read.setblocking(False)
        self._write.setblocking(False)
        selector.register(self._read, selectors.EVENT_READ, None)
        self.signals.install(self._write.fileno())
        if self._reload_dirs:
            self._watcher = start_watching(self._reload_dirs, self._changed)
            log.info("supervisor.watching", dirs=[str(d) for d in self._reload_dirs])

    def clear(self) -> None:
        """Reads what woke the loop (the queues say what to do)."""
        with contextlib.suppress(BlockingIOError):
            while self._read.recv(4096):
                pass

    def _changed(self, paths: list[str]) -> None:
        # the watcher's thread: queue the batch, wake the loop (deque appends are atomic)
        self.reloads.append(paths)
        with contextlib.suppress(OSError):
            self._write.send(b"r")

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.set()
        self.signals.close()
        self._read.close()
        self._write.close()
