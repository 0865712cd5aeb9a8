"""``aioqueue run`` as a real process for tests; its JSON log lines become events to wait on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from aioqueue import Queue
from aioqueue.task import Call

ROOT = Path(__file__).resolve().parent.parent

Event = dict[str, Any]


class Supervised:
    def __init__(
        self,
        args: Sequence[str],
        *,
        redis_url: str,
        queue: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        target: str = "tests.apps:worker",
    ) -> None:
        full_env = {
            **os.environ,
            "AIOQUEUE_REDIS_URL": redis_url,
            "TEST_QUEUE": queue,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aioqueue", "--log-format", "json", "run", target, *args],
            env=full_env,
            cwd=cwd or ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.events: list[Event] = []
        self.text: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._cond:
                if isinstance(event, dict) and "event" in event:
                    event["_at"] = time.monotonic()
                    self.events.append(event)
                else:
                    self.text.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def matching(self, name: str, **fields: Any) -> list[Event]:
        with self._cond:
            return [
                e
                for e in self.events
                if e["event"] == name and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(
        self, name: str, count: int = 1, timeout: float = 30.0, **fields: Any
    ) -> list[Event]:
        """Blocks until ``count`` events named ``name`` with these fields were logged."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.matching(name, **fields)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(
                        f"{count} x {name} {fields} not seen; got {len(found)}\n" + self.dump()
                    )
                self._cond.wait(left)

    def wait_eof(self, timeout: float = 30.0) -> None:
        """Blocks until every process writing to the log (supervisor and children) exited."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), self.dump()

    def dump(self) -> str:
        tail = [json.dumps({k: v for k, v in e.items() if k != "_at"}) for e in self.events[-40:]]
        return "\n".join(tail + self.text[-40:])

    def ready_pids(self) -> list[int]:
        return [e["pid"] for e in self.matching("supervisor.child_ready")]

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # children the supervisor did not see exit (it was killed first): a pid it
        # reaped may belong to another process by now
        gone = {e["pid"] for e in self.matching("supervisor.child_exited")}
        gone |= {e["pid"] for e in self.matching("supervisor.child_retired")}
        for event in self.matching("supervisor.child_started"):
            if event["pid"] not in gone:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(event["pid"], signal.SIGKILL)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def enqueue(redis_url: str, queue: str, calls: list[Call[Any]]) -> list[str]:
    async def main() -> list[str]:
        async with Queue(redis_url, name=queue) as q:
            return [job.id for job in await q.enqueue_many(calls)]

    return anyio.run(main)


def results(redis_url: str, queue: str, ids: list[str], timeout: float = 30.0) -> list[Any]:
    async def main() -> list[Any]:
        async with Queue(redis_url, name=queue) as q:
            return [await q.job(i).result(timeout=timeout) for i in ids]

    return anyio.run(main)


def infos(redis_url: str, queue: str, ids: list[str]) -> list[Any]:
    async def main() -> list[Any]:
        async with Queue(redis_url, name=queue) as q:
            return [await q.job(i).info() for i in ids]

    return anyio.run(main)


Factory = Callable[..., Supervised]
