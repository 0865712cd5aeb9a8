"""arq: tasks, ``WorkerSettings`` (``arq apps.arq_app.WorkerSettings``) and the client."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import arq
import uvloop
from arq import create_pool
from arq.connections import RedisSettings
from probe import PROBE, burn

uvloop.install()  # arq's worker takes asyncio.get_event_loop(): the uvloop policy applies

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "100"))


async def noop(ctx: dict[str, Any], i: int) -> None:
    PROBE.hit(i)


async def sleep(ctx: dict[str, Any], i: int) -> None:
    await asyncio.sleep(0.01)
    PROBE.hit(i)


async def cpu(ctx: dict[str, Any], i: int) -> None:
    burn()
    PROBE.hit(i)


async def lat(ctx: dict[str, Any], i: int, t: float) -> None:
    PROBE.hit(i, time.time())


async def delayed(ctx: dict[str, Any], i: int, due: float) -> None:
    PROBE.hit(i, time.time() - due)


class WorkerSettings:
    functions = [noop, sleep, cpu, lat, delayed]  # noqa: RUF012 - arq reads class attributes
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = CONCURRENCY  # everything else: arq's defaults (poll_delay 0.5 s)


# per-job lines ("→ noop(...)", "← ● ") are INFO: the worker logs warnings and up only
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}


class Adapter:
    name = "arq"
    version = arq.VERSION
    bulk_na: str | None = "no bulk enqueue API (enqueue_job is one job per call)"
    delayed_na: str | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self, kind: str, *args: Any) -> Any:
        return await self.pool.enqueue_job(kind, *args)

    async def enqueue_delayed(self, i: int, due: float) -> None:
        await self.pool.enqueue_job(
            "delayed", i, due, _defer_until=datetime.fromtimestamp(due, UTC)
        )

    async def result(self, handle: Any) -> None:
        await handle.result(timeout=60)  # arq's default poll_delay (0.5 s)

    def worker_cmds(self, processes: int, concurrency: int) -> list[list[str]]:
        # arq has no multi-process runner: its docs scale by starting more workers
        exe = str(Path(sys.executable).parent / "arq")
        cmd = [exe, "apps.arq_app.WorkerSettings", "--custom-log-dict", "apps.arq_app.LOG_CONFIG"]
        return [cmd] * processes
