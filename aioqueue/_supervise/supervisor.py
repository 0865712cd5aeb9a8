"""The supervisor: N worker processes, kept alive, restarted, recycled and stopped.

    aioqueue run app.tasks:worker --processes 4

    supervisor  (this process: no event loop, no Redis connection)
    ├── slot 0: python -m aioqueue run app.tasks:worker --child   ┐ one worker each, with its
    ├── slot 1: ...                                               │ own event loop, in its own
    └── ...                                                       ┘ process group

How a child is started (re-executed, in its own process group) is ``process.spawn``;
what the supervisor decides about exits and restarts is ``policy``.

Signals to the supervisor:

    SIGTERM, SIGINT   drain: every child stops fetching, finishes its jobs
                      (up to the worker's grace), then the supervisor exits 0
    second one, SIGQUIT   fast stop: children skip the grace period, hand jobs back
    SIGHUP            rolling restart: per slot, start the replacement, wait until
                      it fetches, then drain the old process; one slot at a time
    SIGTTIN, SIGTTOU  one process more, one fewer (never fewer than one)

A child that exits, or whose event loop stops answering pings within
``ping_timeout``, is replaced. Consecutive failures back off exponentially
(``restart_backoff`` doubled per failure, at most 30 s; see ``policy``);
a child that fetched 10 s resets the count. A child that hit
``--max-jobs-per-child`` exits by itself once drained and is replaced at once;
one over ``--max-memory-per-child`` (RSS, read from /proc) is replaced like a
rolling restart. ``--reload`` rolls every slot when a watched file changes.

Settings reach the children in their environment, resolved by ``aioqueue run``
(never on their command line, where ``ps`` would show a Redis password).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import time

import structlog

from aioqueue._supervise.config import SupervisorConfig
from aioqueue._supervise.policy import Exit, ExitFacts, RestartBackoff, RollingPlan, decide_exit
from aioqueue._supervise.process import Child, Slot, describe_exit, spawn
from aioqueue._supervise.signals import Wakeups

__all__ = ["Supervisor"]

log = structlog.get_logger("aioqueue.supervisor")


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.slots: dict[int, Slot] = {}
        self.draining: list[Child] = []  # retired from their slot, finishing their jobs
        self.stopping = False
        self.fast = False
        self.stop_deadline = 0.0
        self.rolling = RollingPlan()
        self.rolling_old: Child | None = None  # the process the current rolling step retires
        self.backoff = RestartBackoff(config.restart_backoff)
        self.restarts = 0
        self._wakeups = Wakeups(config.reload_dirs)
        self._selector = selectors.DefaultSelector()

    # -- the loop ------------------------------------------------------------------

    def run(self) -> int:
        """Supervises until stopped; returns the exit code for the process."""
        self._wakeups.open(self._selector)
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
            self._kill_all()  # only if an error got here: a normal end has no children left
            self._wakeups.close()
            self._remove_pid_file()
            self._selector.close()
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
                self._wakeups.clear()
            else:
                self._read(key.data)
        while self._wakeups.signals.pending:
            self._on_signal(self._wakeups.signals.pending.popleft())
        while self._wakeups.reloads:
            self._on_reload(self._wakeups.reloads.popleft())
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
        cfg = self.config
        child = spawn(slot.index, cfg.target, cfg.child_env, cfg.cli_args, cfg.run_args)
        self._selector.register(child.sock, selectors.EVENT_READ, child)
        slot.child = child
        slot.restart_at = None
        log.info("supervisor.child_started", slot=slot.index, pid=child.pid)

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
        for words in child.receive(data):
            if child.on_message(words) == "ready":
                log.info("supervisor.child_ready", slot=child.slot, pid=child.pid)
                slot = self.slots.get(child.slot)
                if slot is not None and slot.child is child and slot.old is not None:
                    self._retire(slot.old, slot.old_reason)
                    slot.old = None

    def _check(self, child: Child, now: float) -> None:
        """Liveness and memory of one running child."""
        if child.retiring is not None:
            return  # draining: the stop deadline covers it
        problem = child.ping(now, self.config.ping_interval, self.config.ping_timeout)
        if problem is not None:
            self._kill_unresponsive(child, problem)
            return
        limit = self.config.max_memory
        rss = None if limit is None else child.memory(now)
        if rss is None or limit is None or rss <= limit:
            return
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
        if self.config.on_child_exit is not None:
            self.config.on_child_exit(child.pid)
        how = describe_exit(code)
        slot = self.slots.get(child.slot)
        facts = ExitFacts(
            code=code,
            said=child.exit_reason,
            retired=child in self.draining,
            replaced=slot is not None and slot.old is child,
            stopping=self.stopping,
            burst=self.config.burst,
        )
        decision = decide_exit(facts)
        if decision is Exit.RETIRED:
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
        if slot is None:
            return
        if decision is Exit.OLD_DIED:
            slot.old = None
            log.warning("supervisor.child_exited", slot=child.slot, pid=child.pid, exit=how)
            return
        slot.child = None
        if decision is Exit.STOPPING:
            log.info("supervisor.child_exited", slot=child.slot, pid=child.pid, exit=how)
        elif decision is Exit.RECYCLE:
            log.info(
                "supervisor.recycle", slot=child.slot, pid=child.pid, reason="max_jobs", exit=how
            )
            slot.crashes = 0
            self._restart(slot, 0.0)
        elif decision is Exit.DRAINED:
            log.info("supervisor.child_drained", slot=child.slot, pid=child.pid)
            del self.slots[child.slot]
        else:
            now = time.monotonic()
            fetched = None if child.ready_at is None else now - child.ready_at
            slot.crashes = self.backoff.crashes(slot.crashes, fetched)
            delay = self.backoff.delay(slot.crashes)
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
        step = self.rolling.next(self._replaceable)
        if step is not None:
            slot = self.slots[step[0]]
            self.rolling_old = slot.child
            self._replace(slot, step[1])
        elif self.rolling.finish():
            log.info("supervisor.rolling_restart_done")

    def _replaceable(self, index: int) -> bool:
        slot = self.slots.get(index)
        return slot is not None and slot.child is not None and slot.old is None

    def _roll_all(self, reason: str) -> None:
        self.rolling.add(self.slots, reason)

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

    # -- signals, reload, pid file (what wakes the loop: signals.Wakeups) ----------------

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

    def _write_pid_file(self) -> None:
        if self.config.pid_file is not None:
            self.config.pid_file.write_text(f"{os.getpid()}\n")

    def _remove_pid_file(self) -> None:
        path = self.config.pid_file
        if path is not None:
            with contextlib.suppress(OSError):
                if path.read_text().strip() == str(os.getpid()):
                    path.unlink()
