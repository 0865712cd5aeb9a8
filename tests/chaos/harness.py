"""The chaos suite's tools: a pool of real worker processes, waits and the final audit."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import redis.asyncio as aioredis

from aioqueue import Job, Queue
from aioqueue._protocol.keys import QueueKeys
from tests.chaos import jobs
from tests.supervised import Supervised

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
    logs: dict[int, Path] = field(default_factory=dict)

    def start_one(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "AIOQUEUE_REDIS_URL": self.url,
            "TEST_QUEUE": self.queue,
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        fd, name = tempfile.mkstemp(prefix="aioqueue-chaos-", suffix=".log")
        path = Path(name)
        log = os.fdopen(fd, "wb")
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
            # a file, not a pipe: a pipe nobody reads fills up during a long
            # outage and the worker then blocks writing its log
            stderr=log,
        )
        log.close()
        self.logs[proc.pid] = path
        self.spawned += 1
        self.procs.append(proc)
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text()

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
            self.start_one()
        return len(dead)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        self.procs.clear()
        for path in self.logs.values():
            path.unlink(missing_ok=True)


def live_children(sup: Supervised) -> list[int]:
    """Pids of the supervisor's children that fetch jobs and have not exited, from its log."""
    gone = {e["pid"] for e in sup.matching("supervisor.child_exited")}
    gone |= {e["pid"] for e in sup.matching("supervisor.child_retired")}
    return [pid for pid in sup.ready_pids() if pid not in gone]


async def enqueue_records(queue: Queue, run: str, n: int, seconds: float) -> list[Job[int]]:
    out: list[Job[int]] = []
    for start in range(0, n, 1000):
        out += await queue.enqueue_many(
            jobs.record.call(run, seconds) for _ in range(min(1000, n - start))
        )
    return out


async def wait_all(jobs_: list[Job[int]], timeout: float, at_once: int = 5000) -> list[int]:
    """Every job's result (each an `await`: no polling), ``at_once`` waits at a time."""
    results: list[int] = [0] * len(jobs_)
    limit = anyio.Semaphore(at_once)

    async def one(i: int, job: Job[int]) -> None:
        async with limit:
            results[i] = await job.result(timeout=timeout)

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            for i, job in enumerate(jobs_):
                tg.start_soon(one, i, job)
    return results


@dataclass
class Audit:
    started: dict[str, int]
    finished: dict[str, int]
    active: int
    scheduled: int
    ready: int
    dead: set[str]
    stats: dict[str, int]

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
            stats={k.decode(): int(v) for k, v in (await client.hgetall(keys.stats)).items()},
        )
    finally:
        await client.aclose()


async def lost_deliveries(url: str, queue: str, ids: list[str]) -> dict[str, int]:
    """Jobs with deliveries that were taken back after their lease expired (field `l`)."""
    client = aioredis.from_url(url)
    keys = QueueKeys(queue)
    try:
        out: dict[str, int] = {}
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            async with client.pipeline(transaction=False) as pipe:
                for job_id in chunk:
                    pipe.hget(keys.job(job_id), "l")
                values = await pipe.execute()
            out.update({i: int(v) for i, v in zip(chunk, values, strict=True) if v and int(v)})
        return out
    finally:
        await client.aclose()
