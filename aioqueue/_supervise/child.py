"""The supervised side: one worker process and its line to the supervisor.

The supervisor hands each child one end of a socket pair (its fd number in
``AIOQUEUE_CONTROL_FD``). Lines, ASCII, one message each:

    supervisor -> child   ping
    child -> supervisor   up                    the event loop runs (target imported)
                          ready                 the worker fetches jobs
                          pong <jobs done>      answer to a ping
                          exit <reason>         the worker returned: max_jobs | burst | stopped

The pong is written by a task of the worker's own event loop, not by a thread:
a loop wedged by a task that never yields stops answering, and the supervisor
replaces the process. When the supervisor goes away (its end closes), the
child drains and exits rather than live on unsupervised.
"""

from __future__ import annotations

import contextlib
import os
import socket
from functools import partial

import anyio
import structlog
from anyio.abc import UNIXSocketStream

from aioqueue._supervise.process import CONTROL_FD_ENV
from aioqueue._worker.worker import Worker

__all__ = ["CONTROL_FD_ENV", "run_supervised"]

log = structlog.get_logger("aioqueue.child")


class _Line:
    """Writes whole lines; the lock keeps two tasks' lines from interleaving."""

    def __init__(self, stream: UNIXSocketStream) -> None:
        self.stream = stream
        self.lock = anyio.Lock()

    async def send(self, line: str) -> None:
        async with self.lock:
            # the supervisor may be gone; the worker must still finish its drain
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await self.stream.send(line.encode() + b"\n")


async def run_supervised(worker: Worker, fd: int) -> None:
    """Runs ``worker`` until it stops, talking to the supervisor on ``fd``."""
    os.set_inheritable(fd, False)  # processes a task starts must not hold the line open
    sock = socket.socket(fileno=fd)
    stream = await UNIXSocketStream.from_socket(sock)
    line = _Line(stream)
    async with stream:
        await line.send("up")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_answer, worker, stream, line)
            async with anyio.create_task_group() as inner:
                await inner.start(partial(worker.run, handle_signals=True))
                await line.send("ready")
            if worker.max_jobs is not None and worker.jobs_done >= worker.max_jobs:
                reason = "max_jobs"
            elif worker.burst:
                reason = "burst"
            else:
                reason = "stopped"
            await line.send(f"exit {reason}")
            tg.cancel_scope.cancel()


async def _answer(worker: Worker, stream: UNIXSocketStream, line: _Line) -> None:
    buffer = b""
    while True:
        try:
            data = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            log.warning("worker.supervisor_gone", worker=worker.id, action="draining")
            worker.stop()
            return
        buffer += data
        while b"\n" in buffer:
            message, buffer = buffer.split(b"\n", 1)
            if message == b"ping":
                await line.send(f"pong {worker.jobs_done}")
