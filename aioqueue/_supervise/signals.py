"""Signals for a select() loop: handlers only queue the number; the wake-up fd ends the wait."""

from __future__ import annotations

import signal
from collections import deque
from types import FrameType
from typing import Any

__all__ = ["SignalQueue"]

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
