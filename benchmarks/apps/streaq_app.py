"""streaQ: tasks, the worker (``streaq run apps.streaq_app:worker``) and the client."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
from probe import PROBE, burn
from streaq import Worker

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "100"))

# streaQ's client holds one pooled connection per awaited result (a pub/sub each) and
# coredis pools 64 by default: with 64 requests awaiting results, the enqueues of the next
# ones wait for a connection forever and nothing completes (the web benchmark served no
# request at 100 connections). The web benchmark raises the pool (BENCH_STREAQ_POOL).
_POOL = int(os.environ.get("BENCH_STREAQ_POOL", "0")) or None
worker = Worker(
    redis_url=URL,
    concurrency=CONCURRENCY,
    anyio_kwargs={"use_uvloop": True},
    **({"redis_kwargs": {"max_connections": _POOL}} if _POOL else {}),
)


# silent=True: streaQ's documented switch for per-task log lines
@worker.task(silent=True)
async def noop(i: int) -> None:
    PROBE.hit(i)


@worker.task(silent=True)
async def sleep(i: int) -> None:
    await anyio.sleep(0.01)
    PROBE.hit(i)


@worker.task(silent=True)
async def cpu(i: int) -> None:
    burn()
    PROBE.hit(i)


@worker.task(silent=True)
async def lat(i: int, t: float) -> None:
    PROBE.hit(i, time.time())


@worker.task(silent=True)
async def delayed(i: int, due: float) -> None:
    PROBE.hit(i, time.time() - due)


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep, "cpu": cpu, "lat": lat}


class Adapter:
    name = "streaq"
    version = version("streaq")
    bulk_na: str | None = None
    delayed_na: str | None = None

    def __init__(self, url: str) -> None:
        self.url = url  # the module-level worker was built from the same URL (env)

    async def open(self) -> None:
        self.cm = worker.__asynccontextmanager__()
        await self.cm.__aenter__()

    async def close(self) -> None:
        await self.cm.__aexit__(None, None, None)

    async def enqueue(self, kind: str, *args: Any) -> Any:
        return await TASKS[kind].enqueue(*args)

    async def enqueue_bulk(self, kind: str, arg_tuples: list[tuple[Any, ...]]) -> None:
        t = TASKS[kind]
        await worker.enqueue_many([t.enqueue(*a) for a in arg_tuples])

    async def enqueue_delayed(self, i: int, due: float) -> None:
        await delayed.enqueue(i, due).start(schedule=datetime.fromtimestamp(due, UTC))

    async def result(self, handle: Any) -> None:
        await handle.result(timeout=60)

    def worker_cmds(self, processes: int, concurrency: int) -> list[list[str]]:
        exe = str(Path(sys.executable).parent / "streaq")
        return [[exe, "run", "apps.streaq_app:worker", "--workers", str(processes)]]
