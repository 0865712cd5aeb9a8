"""The supervisor's handle on one worker process: spawn, signal, the control line, exit text."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

CONTROL_FD_ENV = "AIOQUEUE_CONTROL_FD"
STARTUP_TIMEOUT = 60.0  # seconds a child may take to import its target
MEMORY_CHECK_EVERY = 1.0

log = structlog.get_logger("aioqueue.supervisor")
_memory_warned = False

__all__ = ["CONTROL_FD_ENV", "Child", "Slot", "describe_exit", "rss_bytes", "spawn"]


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid``, or None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class Child:
    """One worker process and the supervisor's end of its control line."""

    def __init__(self, slot: int, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.slot = slot
        self.proc = proc
        self.sock = sock
        self.started = time.monotonic()
        self.buffer = b""
        self.up = False
        self.ready_at: float | None = None
        self.ping_sent: float | None = None
        self.last_pong = self.started
        self.next_memory_check = self.started
        self.jobs_done = 0
        self.exit_reason: str | None = None  # what the child said before exiting
        self.retiring: str | None = None  # why the supervisor stopped it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def send(self, line: bytes) -> None:
        with contextlib.suppress(OSError):  # a full or closed line: the ping times out
            self.sock.send(line + b"\n")

    def receive(self, data: bytes) -> list[list[str]]:
        """The whole lines ``data`` completes, split into words (protocol: ``child``)."""
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [w for w in (line.decode(errors="replace").split() for line in lines) if w]

    def on_message(self, words: list[str]) -> str:
        now = time.monotonic()
        kind = words[0]
        if kind == "up":
            self.up = True
            self.last_pong = now
        elif kind == "ready":
            self.ready_at = now
        elif kind == "pong":
            self.ping_sent = None
            self.last_pong = now
            with contextlib.suppress(IndexError, ValueError):
                self.jobs_done = int(words[1])
        elif kind == "exit":
            self.exit_reason = words[1] if len(words) > 1 else "stopped"
        return kind

    def memory(self, now: float) -> int | None:
        """Its resident bytes, read at most once a second once it fetches; else None."""
        global _memory_warned
        if self.ready_at is None or now < self.next_memory_check:
            return None
        self.next_memory_check = now + MEMORY_CHECK_EVERY
        rss = rss_bytes(self.pid)
        if rss is None and not _memory_warned:
            log.warning("supervisor.memory_unknown", advice="needs /proc (Linux)")
            _memory_warned = True
        return rss

    def ping(self, now: float, interval: float, timeout: float) -> str | None:
        """Sends a ping when one is due; says why the child is unresponsive, if it is."""
        if not self.up:
            if now - self.started > STARTUP_TIMEOUT:
                return "did not start within the startup timeout"
            return None
        if self.ping_sent is not None:
            if now - self.ping_sent > timeout:
                return "its event loop stopped answering pings"
        elif now - self.last_pong >= interval:
            self.ping_sent = now
            self.send(b"ping")
        return None


@dataclass
class Slot:
    """A place for one process. During a replacement, ``old`` serves until ``child`` is ready."""

    index: int
    child: Child | None = None
    old: Child | None = None
    old_reason: str = ""
    crashes: int = 0
    restart_at: float | None = None


def spawn(
    slot: int, target: str, env: Mapping[str, str], cli_args: Sequence[str], run_args: Sequence[str]
) -> Child:
    """Starts ``python -m aioqueue run TARGET --child`` in its own process group.

    Re-executed rather than forked: the child imports the target afresh (which
    ``--reload`` needs), nothing is pickled, and ``ps`` shows what it is. Its own
    process group keeps a terminal's Ctrl-C from reaching it beside the stop the
    supervisor forwards (two would read as "skip the grace period").
    """
    ours, theirs = socket.socketpair()
    argv = [sys.executable, "-m", "aioqueue", *cli_args, "run", target, "--child", *run_args]
    try:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env, CONTROL_FD_ENV: str(theirs.fileno())},
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            process_group=0,
        )
    finally:
        theirs.close()
    ours.setblocking(False)
    return Child(slot, proc, ours)
