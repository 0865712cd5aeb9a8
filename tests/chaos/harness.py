"""The chaos suite's tools: a pool of real worker processes and the final audit."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from aioqueue.keys import QueueKeys

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("AIOQUEUE_CHAOS") == "long"


def scale(short: int, long: int) -> int:
    """Short form in `make test`, long form in `make chaos`."""
    return long if LONG else short


@dataclass
class WorkerPool:
    """N `aioqueue run tests.chaos.jobs:worker` processes, respawned by `respawn()`."""

    url: str
    queue: str
    size: int
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    spawned: int = 0

    def start_one(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "AIOQUEUE_REDIS_URL": self.url,
            "TEST_QUEUE": self.queue,
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aioqueue",
                "--log-level",
                "warning",
                "run",
                "--processes",
                "0",  # the test itself plays the supervisor
                "tests.chaos.jobs:worker",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.spawned += 1
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        for _ in range(self.size):
            self.start_one()

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def respawn(self) -> int:
        """Replaces dead processes; returns how many were replaced."""
        dead = [p for p in self.procs if p.poll() is not None]
        for proc in dead:
            self.procs.remove(proc)
            if proc.stderr:
                proc.stderr.close()
            self.start_one()
        return len(dead)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()
        self.procs.clear()


@dataclass
class Audit:
    started: dict[str, int]
    finished: dict[str, int]
    active: int
    scheduled: int
    ready: int
    dead: set[str]

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.finished.values() if n > 1)

    def missing(self, ids: list[str]) -> list[str]:
        return [i for i in ids if self.finished.get(i, 0) == 0]


async def audit(url: str, run: str, queue: str) -> Audit:
    client = aioredis.from_url(url)
    keys = QueueKeys(queue)
    try:
        started = {
            k.decode(): int(v) for k, v in (await client.hgetall(f"chaos:{run}:started")).items()
        }
        finished = {
            k.decode(): int(v) for k, v in (await client.hgetall(f"chaos:{run}:finished")).items()
        }
        return Audit(
            started=started,
            finished=finished,
            active=await client.zcard(keys.active),
            scheduled=await client.zcard(keys.sched),
            ready=await client.llen(keys.ready),
            dead={m.decode() for m in await client.zrange(keys.dead, 0, -1)},
        )
    finally:
        await client.aclose()
