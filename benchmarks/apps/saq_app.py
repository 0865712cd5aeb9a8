"""SAQ: tasks, ``settings`` (``saq apps.saq_app.settings``) and the client."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import uvloop
from probe import PROBE, burn
from saq import Queue

uvloop.install()  # saq's runner calls asyncio.new_event_loop(): the uvloop policy applies

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "100"))


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    PROBE.hit(i)


async def sleep(ctx: dict[str, Any], *, i: int) -> None:
    await asyncio.sleep(0.01)
    PROBE.hit(i)


async def cpu(ctx: dict[str, Any], *, i: int) -> None:
    burn()
    PROBE.hit(i)


async def lat(ctx: dict[str, Any], *, i: int, t: float) -> None:
    PROBE.hit(i, time.time())


async def delayed(ctx: dict[str, Any], *, i: int, due: float) -> None:
    PROBE.hit(i, time.time() - due)


def settings() -> dict[str, Any]:
    # a callable: the queue is built in the worker process, after saq's fork
    return {
        "queue": Queue.from_url(URL),
        "functions": [noop, sleep, cpu, lat, delayed],
        "concurrency": CONCURRENCY,
    }


ARG_NAMES = {"noop": ("i",), "sleep": ("i",), "cpu": ("i",), "lat": ("i", "t")}


class Adapter:
    name = "saq"
    version = version("saq")
    bulk_na: str | None = "no bulk enqueue API (Queue.map enqueues one by one and waits)"
    delayed_na: str | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        self.queue = Queue.from_url(self.url)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self, kind: str, *args: Any) -> Any:
        return await self.queue.enqueue(kind, **dict(zip(ARG_NAMES[kind], args, strict=True)))

    async def enqueue_delayed(self, i: int, due: float) -> None:
        when = math.ceil(due)  # Job.scheduled is whole epoch seconds
        await self.queue.enqueue("delayed", i=i, due=float(when), scheduled=when)

    async def result(self, handle: Any) -> None:
        await handle.refresh(until_complete=60)  # saq's listen: polls every 0.5 s

    def worker_cmds(self, processes: int, concurrency: int) -> list[list[str]]:
        exe = str(Path(sys.executable).parent / "saq")
        return [[exe, "apps.saq_app.settings", "--workers", str(processes)]]
