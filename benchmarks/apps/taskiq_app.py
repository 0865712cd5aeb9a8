"""taskiq + taskiq-redis: tasks, the broker (``taskiq worker apps.taskiq_app:broker``), client."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from probe import PROBE, burn
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

# the broker taskiq-redis' README shows first (streams, with acknowledgements)
broker = RedisStreamBroker(url=URL).with_result_backend(RedisAsyncResultBackend(redis_url=URL))


@broker.task
async def noop(i: int) -> None:
    PROBE.hit(i)


@broker.task
async def sleep(i: int) -> None:
    await asyncio.sleep(0.01)
    PROBE.hit(i)


@broker.task
async def cpu(i: int) -> None:
    burn()
    PROBE.hit(i)


@broker.task
async def lat(i: int, t: float) -> None:
    PROBE.hit(i, time.time())


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep, "cpu": cpu, "lat": lat}


class Adapter:
    name = "taskiq"
    version = f"{version('taskiq')} (taskiq-redis {version('taskiq-redis')})"
    bulk_na: str | None = "no bulk enqueue API (kiq sends one message per call)"
    delayed_na: str | None = (
        "delays need the separate `taskiq scheduler` process and a schedule source"
        " (1 s loop); not set up here"
    )

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        await broker.startup()  # also creates the stream's consumer group

    async def close(self) -> None:
        await broker.shutdown()

    async def enqueue(self, kind: str, *args: Any) -> Any:
        return await TASKS[kind].kiq(*args)

    async def result(self, handle: Any) -> None:
        await handle.wait_result(timeout=60)  # polls every 0.2 s (its default)

    def worker_cmds(self, processes: int, concurrency: int) -> list[list[str]]:
        exe = str(Path(sys.executable).parent / "taskiq")
        return [
            [
                exe,
                "worker",
                "apps.taskiq_app:broker",
                "--workers",
                str(processes),
                "--max-async-tasks",
                str(concurrency),
                "--log-level",
                "WARNING",
            ]
        ]
