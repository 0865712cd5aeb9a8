"""The supervisor: N worker processes, kept alive, restarted, recycled and stopped.

    aioqueue run app.tasks:worker --processes 4

    supervisor  (this process: no event loop, no Redis connection)
    ├── slot 0: python -m aioqueue run app.tasks:worker --child   ┐ one worker each, with its
    ├── slot 1: ...                                               │ own event loop, in its own
    └── ...                                                       ┘ process group

Children are re-executed (``subprocess``) rather than forked or started with
``multiprocessing``: each one imports the target afresh (which ``--reload``
needs), nothing is pickled, a child is the same code path an operator runs by
hand, and ``ps`` shows what each process is. A socket pair per child carries
the liveness pings (see ``aioqueue.child``).

Children run in their own process groups, so a Ctrl-C in a terminal reaches
the supervisor only: it forwards one stop, where the group-wide SIGINT plus a
forwarded one would read as "stop now, skip the grace period".

Signals to the supervisor:

    SIGTERM, SIGINT   drain: every child stops fetching, finishes its jobs
                      (up to the worker's grace), then the supervisor exits 0
    second one, SIGQUIT   fast stop: children skip the grace period, hand jobs back
    SIGHUP            rolling restart: per slot, start the replacement, wait until
                      it fetches, then drain the old process; one slot at a time
    SIGTTIN, SIGTTOU  one process more, one fewer (never fewer than one)

A child that exits, or whose event loop stops answering pings within
``ping_timeout``, is replaced. Consecutive failures back off exponentially
(``restart_backoff`` doubled per failure, at most ``RESTART_BACKOFF_MAX``);
a child that ran ``STABLE_AFTER`` seconds resets the count. A child that hit
``--max-jobs-per-child`` exits by itself once drained and is replaced at once;
one over ``--max-memory-per-child`` (RSS, read from /proc) is replaced like a
rolling restart. ``--reload`` rolls every slot when a watched file changes.

Settings precedence, for every option of ``aioqueue run``: a CLI flag, else its
``AIOQUEUE_*`` environment variable, else the Worker object's own value, else
the built-in default. The supervisor passes the resolved values to its children
in their environment (never on their command line, where ``ps`` would show a
Redis password).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from aioqueue.child import CONTROL_FD_ENV

__all__ = ["Supervisor", "SupervisorConfig", "default_processes", "parse_size"]

log = structlog.get_logger("aioqueue.supervisor")

RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # seconds of fetching after which a child's exit is not "crash looping"
STARTUP_TIMEOUT = 60.0  # seconds a child may take to import its target
MEMORY_CHECK_EVERY = 1.0
HANDLED = ("SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD")


def default_processes() -> int:
    """The CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_size(text: str) -> int:
    """Bytes from ``512M``, ``2G``, ``300000K`` or a bare number of megabytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    raw = text.strip().upper().removesuffix("B")
    unit = units.get(raw[-1:], 0)
    number = raw[:-1] if unit else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M or 2G)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * (unit or units["M"]))


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


@dataclass
class SupervisorConfig:
    target: str
    processes: int
    child_env: dict[str, str] = field(default_factory=dict)
    cli_args: Sequence[str] = ()  # group options for the children (log format, level)
    run_args: Sequence[str] = ()  # options of `run --child` that have no environment variable
    grace: float = 30.0
    lease: float = 30.0
    burst: bool = False
    max_memory: int | None = None
    ping_interval: float = 1.0
    ping_timeout: float = 30.0
    restart_backoff: float = 0.5
    pid_file: Path | None = None
    reload_dirs: Sequence[Path] = ()


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


@dataclass
class Slot:
    """A place for one process. During a replacement, ``old`` serves until ``child`` is ready."""

    index: int
    child: Child | None = None
    old: Child | None = None
    old_reason: str = ""
    crashes: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.slots: dict[int, Slot] = {}
        self.draining: list[Child] = []  # retired from their slot, finishing their jobs
        self.stopping = False
        self.fast = False
        self.stop_deadline = 0.0
        self.rolling: deque[tuple[int, str]] = deque()  # (slot, reason) still to replace
        self.rolling_old: Child | None = None  # the process the current rolling step retires
        self.rolling_active = False
        self.restarts = 0
        self._signals: deque[int] = deque()
        self._reloads: deque[list[str]] = deque()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._memory_warned = False

    # -- the loop ------------------------------------------------------------------

    def run(self) -> int:
        """Supervises until stopped; returns the exit code for the process."""
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        previous = self._install_signals()
        watcher = self._start_reloader()
        self._write_pid_file()
        log.info(
            "supervisor.started",
            pid=os.getpid(),
            target=self.config.target,
            processes=self.config.processes,
            burst=self.config.burst,
        )
        try:
            for index in range(self.config.processes):
                self.slots[index] = Slot(index)
                self._start(self.slots[index])
            while not self._finished():
                self._step()
        finally:
            if watcher is not None:
                watcher.set()
            self._kill_all()  # only if an error got here: a normal end has no children left
            self._restore_signals(previous)
            self._remove_pid_file()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
        log.info("supervisor.stopped", restarts=self.restarts)
        return 0

    def _finished(self) -> bool:
        if self._live():
            return False
        if self.stopping:
            return True
        # burst: every slot drained its queues and retired
        return self.config.burst and not self.slots

    def _live(self) -> list[Child]:
        out = list(self.draining)
        for slot in self.slots.values():
            out += [c for c in (slot.child, slot.old) if c is not None]
        return out

    def _step(self) -> None:
        for key, _ in self._selector.select(self._timeout()):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while self._wake_r.recv(4096):
                        pass
            else:
                self._read(key.data)
        while self._signals:
            self._on_signal(self._signals.popleft())
        while self._reloads:
            self._on_reload(self._reloads.popleft())
        for child in self._live():
            code = child.proc.poll()
            if code is not None:
                self._on_exit(child, code)
        now = time.monotonic()
        if self.stopping:
            if now >= self.stop_deadline:
                for child in self._live():
                    log.error("supervisor.child_kill", pid=child.pid, reason="stop deadline passed")
                    child.signal(signal.SIGKILL)
                self.stop_deadline = now + 10.0
            return
        for child in self._live():
            self._check(child, now)
        for slot in list(self.slots.values()):
            if slot.child is None and slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)
        self._advance_rolling()

    def _timeout(self) -> float:
        """Until the next thing the loop must do by itself (a ping, a restart, a deadline)."""
        now = time.monotonic()
        wake = now + self.config.ping_interval
        if self.stopping:
            wake = min(wake, self.stop_deadline)
        for slot in self.slots.values():
            if slot.child is None and slot.restart_at is not None:
                wake = min(wake, slot.restart_at)
        return max(0.0, wake - now)

    # -- children ------------------------------------------------------------------

    def _start(self, slot: Slot) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, **self.config.child_env, CONTROL_FD_ENV: str(theirs.fileno())}
        argv = [
            sys.executable,
            "-m",
            "aioqueue",
            *self.config.cli_args,
            "run",
            self.config.target,
            "--child",
            *self.config.run_args,
        ]
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                process_group=0,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        child = Child(slot.index, proc, ours)
        self._selector.register(ours, selectors.EVENT_READ, child)
        slot.child = child
        slot.restart_at = None
        log.info("supervisor.child_started", slot=slot.index, pid=proc.pid)

    def _read(self, child: Child) -> None:
        try:
            data = child.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the child closed its end: it is exiting; the poll in _step reaps it
            self._selector.unregister(child.sock)
            return
        child.buffer += data
        while b"\n" in child.buffer:
            line, child.buffer = child.buffer.split(b"\n", 1)
            self._on_message(child, line.decode(errors="replace").split())

    def _on_message(self, child: Child, words: list[str]) -> None:
        if not words:
            return
        now = time.monotonic()
        kind = words[0]
        if kind == "up":
            child.up = True
            child.last_pong = now
        elif kind == "ready":
            child.ready_at = now
            log.info("supervisor.child_ready", slot=child.slot, pid=child.pid)
            slot = self.slots.get(child.slot)
            if slot is not None and slot.child is child and slot.old is not None:
                self._retire(slot.old, slot.old_reason)
                slot.old = None
        elif kind == "pong":
            child.ping_sent = None
            child.last_pong = now
            with contextlib.suppress(IndexError, ValueError):
                child.jobs_done = int(words[1])
        elif kind == "exit":
            child.exit_reason = words[1] if len(words) > 1 else "stopped"

    def _check(self, child: Child, now: float) -> None:
        """Liveness and memory of one running child."""
        if child.retiring is not None:
            return  # draining: the stop deadline covers it
        if not child.up:
            if now - child.started > STARTUP_TIMEOUT:
                self._kill_unresponsive(child, "did not start within the startup timeout")
            return
        if child.ping_sent is not None:
            if now - child.ping_sent > self.config.ping_timeout:
                self._kill_unresponsive(child, "its event loop stopped answering pings")
        elif now - child.last_pong >= self.config.ping_interval:
            child.ping_sent = now
            child.send(b"ping")
        limit = self.config.max_memory
        if limit is not None and child.ready_at is not None and now >= child.next_memory_check:
            child.next_memory_check = now + MEMORY_CHECK_EVERY
            rss = rss_bytes(child.pid)
            if rss is None:
                if not self._memory_warned:
                    log.warning("supervisor.memory_unknown", advice="needs /proc (Linux)")
                    self._memory_warned = True
            elif rss > limit:
                slot = self.slots.get(child.slot)
                if slot is not None and slot.child is child and slot.old is None:
                    log.info(
                        "supervisor.recycle",
                        slot=child.slot,
                        pid=child.pid,
                        reason="memory",
                        rss=rss,
                        limit=limit,
                    )
                    self._replace(slot, "memory")

    def _kill_unresponsive(self, child: Child, why: str) -> None:
        log.error("supervisor.child_unresponsive", slot=child.slot, pid=child.pid, reason=why)
        child.retiring = "unresponsive"
        child.signal(signal.SIGKILL)

    def _retire(self, child: Child, reason: str) -> None:
        """Asks a child to drain and exit; it is not replaced when it does."""
        child.retiring = reason
        self.draining.append(child)
        log.info("supervisor.child_retiring", slot=child.slot, pid=child.pid, reason=reason)
        child.signal(signal.SIGTERM)

    def _replace(self, slot: Slot, reason: str) -> None:
        """Starts a new process for ``slot``; the current one drains once the new one fetches."""
        if slot.child is None or slot.old is not None:
            return
        slot.old, slot.old_reason = slot.child, reason
        self._start(slot)

    def _on_exit(self, child: Child, code: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(child.sock)
        child.sock.close()
        how = describe_exit(code)
        if child in self.draining:
            self.draining.remove(child)
            log.info(
                "supervisor.child_retired",
                slot=child.slot,
                pid=child.pid,
                reason=child.retiring,
                exit=how,
                jobs_done=child.jobs_done,
            )
            return
        slot = self.slots.get(child.slot)
        if slot is None:
            return
        if slot.old is child:  # the process being replaced died first: the new one goes on
            slot.old = None
            log.warning("supervisor.child_exited", slot=child.slot, pid=child.pid, exit=how)
            return
        slot.child = None
        if self.stopping:
            log.info("supervisor.child_exited", slot=child.slot, pid=child.pid, exit=how)
            return
        if code == 0 and child.exit_reason == "max_jobs":
            log.info(
                "supervisor.recycle", slot=child.slot, pid=child.pid, reason="max_jobs", exit=how
            )
            slot.crashes = 0
            self._restart(slot, 0.0)
            return
        if code == 0 and self.config.burst and child.exit_reason == "burst":
            log.info("supervisor.child_drained", slot=child.slot, pid=child.pid)
            del self.slots[child.slot]
            return
        now = time.monotonic()
        if child.ready_at is not None and now - child.ready_at >= STABLE_AFTER:
            slot.crashes = 0
        slot.crashes += 1
        delay = min(
            self.config.restart_backoff * 2 ** (slot.crashes - 1),
            max(RESTART_BACKOFF_MAX, self.config.restart_backoff),
        )
        log.warning(
            "supervisor.child_exited",
            slot=child.slot,
            pid=child.pid,
            exit=how,
            reason=child.retiring or child.exit_reason or "crashed",
            crashes=slot.crashes,
            restart_in=delay,
        )
        self._restart(slot, delay)

    def _restart(self, slot: Slot, delay: float) -> None:
        self.restarts += 1
        slot.restart_at = time.monotonic() + delay
        if delay == 0:
            self._start(slot)

    # -- rolling restarts and scaling ---------------------------------------------------

    def _advance_rolling(self) -> None:
        """One slot at a time: the next starts once the previous old process has exited."""
        if self.rolling_old is not None:
            if self.rolling_old.proc.poll() is None:
                return
            self.rolling_old = None
        while self.rolling:
            index, reason = self.rolling.popleft()
            slot = self.slots.get(index)
            if slot is None or slot.child is None or slot.old is not None:
                continue
            self.rolling_old = slot.child
            self._replace(slot, reason)
            return
        if self.rolling_active:
            self.rolling_active = False
            log.info("supervisor.rolling_restart_done")

    def _roll_all(self, reason: str) -> None:
        queued = {index for index, _ in self.rolling}
        self.rolling.extend((i, reason) for i in sorted(self.slots) if i not in queued)
        self.rolling_active = True

    def _scale_up(self) -> None:
        index = max(self.slots, default=-1) + 1
        self.slots[index] = Slot(index)
        log.info("supervisor.scaled", processes=len(self.slots))
        self._start(self.slots[index])

    def _scale_down(self) -> None:
        if len(self.slots) <= 1:
            log.warning("supervisor.scale_refused", processes=len(self.slots), reason="minimum 1")
            return
        slot = self.slots.pop(max(self.slots))
        for child in (slot.child, slot.old):
            if child is not None:
                self._retire(child, "scale_down")
        log.info("supervisor.scaled", processes=len(self.slots))

    # -- stopping ------------------------------------------------------------------

    def stop(self, *, fast: bool = False) -> None:
        if self.stopping and (self.fast or not fast):
            return
        self.stopping, self.fast = True, fast
        margin = 10.0 if fast else self.config.grace + max(self.config.lease, 5.0) + 10.0
        self.stop_deadline = time.monotonic() + margin
        log.info("supervisor.stopping", fast=fast, children=len(self._live()))
        sig = signal.SIGQUIT if fast else signal.SIGTERM
        for slot in self.slots.values():
            slot.restart_at = None
        for child in self._live():
            # a second SIGTERM would tell a draining worker to skip its grace period
            if fast or child.retiring is None:
                child.retiring = child.retiring or "shutdown"
                child.signal(sig)

    def _kill_all(self) -> None:
        for child in self._live():
            if child.proc.poll() is None:
                child.signal(signal.SIGKILL)
                child.proc.wait()

    # -- signals, reload, pid file -------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        sig = signal.Signals(signum)
        if sig == signal.SIGCHLD:
            return  # woke the loop; the poll in _step reaps
        log.info("supervisor.signal", signal=sig.name)
        if sig in (signal.SIGINT, signal.SIGTERM):
            self.stop(fast=self.stopping)
        elif sig == signal.SIGQUIT:
            self.stop(fast=True)
        elif self.stopping:
            return
        elif sig == signal.SIGHUP:
            log.info("supervisor.rolling_restart", processes=len(self.slots), reason="SIGHUP")
            self._roll_all("rolling_restart")
        elif sig == signal.SIGTTIN:
            self._scale_up()
        elif sig == signal.SIGTTOU:
            self._scale_down()

    def _on_reload(self, changes: list[str]) -> None:
        if self.stopping:
            return
        log.info("supervisor.reload", changed=changes[:5], processes=len(self.slots))
        self._roll_all("reload")

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # the wake-up fd makes select() return

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for name in HANDLED:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, self._handler)
        previous[-1] = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _start_reloader(self) -> threading.Event | None:
        if not self.config.reload_dirs:
            return None
        from watchfiles import PythonFilter, watch

        stop = threading.Event()
        dirs = [str(d) for d in self.config.reload_dirs]

        def run() -> None:
            for changes in watch(*dirs, watch_filter=PythonFilter(), stop_event=stop):
                self._reloads.append(sorted(path for _, path in changes))
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"r")

        threading.Thread(target=run, name="aioqueue-reload", daemon=True).start()
        log.info("supervisor.watching", dirs=dirs)
        return stop

    def _write_pid_file(self) -> None:
        if self.config.pid_file is not None:
            self.config.pid_file.write_text(f"{os.getpid()}\n")

    def _remove_pid_file(self) -> None:
        path = self.config.pid_file
        if path is not None:
            with contextlib.suppress(OSError):
                if path.read_text().strip() == str(os.getpid()):
                    path.unlink()
