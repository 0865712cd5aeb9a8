"""aioqueue: tasks, the worker (``python -m aioqueue run apps.aioqueue_app:worker``), the client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from probe import PROBE, burn

import aioqueue
from aioqueue import Queue, Worker, task

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@task
async def noop(i: int) -> None:
    PROBE.hit(i)


@task
async def sleep(i: int) -> None:
    await asyncio.sleep(0.01)
    PROBE.hit(i)


@task
async def cpu(i: int) -> None:
    burn()
    PROBE.hit(i)


@task
async def lat(i: int, t: float) -> None:
    PROBE.hit(i, time.time())


@task
async def delayed(i: int, due: float) -> None:
    PROBE.hit(i, time.time() - due)


TASKS = {"noop": noop, "sleep": sleep, "cpu": cpu, "lat": lat, "delayed": delayed}


# AIOQUEUE_EVENTS_MAXLEN=0 turns the event stream off for producer and worker alike
# (to compare with a release that had none); unset, each keeps its default
EVENTS: dict[str, Any] = (
    {"events_maxlen": int(os.environ["AIOQUEUE_EVENTS_MAXLEN"])}
    if os.environ.get("AIOQUEUE_EVENTS_MAXLEN")
    else {}
)


def make_worker(concurrency: int = 100) -> Worker:
    return Worker(list(TASKS.values()), redis_url=URL, concurrency=concurrency, **EVENTS)


def __getattr__(name: str) -> Any:
    # `aioqueue run apps.aioqueue_app:worker` looks the worker up here; built lazily
    # because Worker() outside a running loop raises with anyio 4.16 (see README)
    if name == "worker":
        return make_worker()
    raise AttributeError(name)


def _cli_can_build_worker() -> bool:
    """True once `aioqueue run` can import its CLI and build a Worker outside a loop."""
    code = "import aioqueue._cli.main; from aioqueue import Worker; Worker()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _has_processes_flag() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "aioqueue", "run", "--help"], capture_output=True, text=True
    )
    return "--processes" in out.stdout


class Adapter:
    name = "aioqueue"
    version = aioqueue.__version__
    bulk_na: str | None = None
    delayed_na: str | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        self.queue = Queue(self.url, **EVENTS)
        await self.queue.__aenter__()

    async def close(self) -> None:
        await self.queue.__aexit__(None, None, None)

    async def enqueue(self, kind: str, *args: Any) -> Any:
        return await self.queue.enqueue(TASKS[kind], *args)

    async def enqueue_bulk(self, kind: str, arg_tuples: list[tuple[Any, ...]]) -> None:
        t = TASKS[kind]
        await self.queue.enqueue_many([t.call(*a) for a in arg_tuples])

    async def enqueue_delayed(self, i: int, due: float) -> None:
        at = datetime.fromtimestamp(due, UTC)
        await self.queue.enqueue(delayed.options(at=at), i, due)

    async def result(self, handle: Any) -> None:
        await handle.result(timeout=60)

    def worker_cmds(self, processes: int, concurrency: int) -> list[list[str]]:
        if not _cli_can_build_worker():
            # stand-in with the same steps as `aioqueue run` (see apps/aioqueue_run.py)
            self.runner = "apps.aioqueue_run (the CLI cannot start a worker here)"
            cmd = [sys.executable, "-m", "apps.aioqueue_run", "--concurrency", str(concurrency)]
            return [cmd] * processes
        base = [sys.executable, "-m", "aioqueue", "--log-level", "warning", "run"]
        base += ["apps.aioqueue_app:worker", "--redis-url", self.url]
        base += ["--concurrency", str(concurrency)]
        self.runner = "python -m aioqueue run"
        if _has_processes_flag():
            # always explicit: its default is one process per CPU
            self.runner += " --processes N"
            return [[*base, "--processes", str(processes)]]
        # no --processes: N worker processes started side by side
        return [base] * processes
