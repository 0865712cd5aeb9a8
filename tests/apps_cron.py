"""A worker with recurring jobs, run as real processes by test_cron:

    python -m tests.apps_cron        (like ``aioqueue run tests.apps_cron:worker``)

``worker`` is a factory: a Worker is built inside the event loop that runs it.

Each process says it is up by pushing to ``<queue>:up`` once it fires ticks.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from aioqueue import Worker
from aioqueue.cron import cron
from tests import sched_tasks as st

URL = os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0")
QUEUE = os.environ.get("TEST_QUEUE", "default")
open_client, close_client = st.redis_hooks(URL)


async def say_up(state: dict[str, Any]) -> None:
    await state["redis"].rpush(f"{QUEUE}:up", os.getpid())


def worker() -> Worker:
    return Worker(
        [st.stamp, st.slow_tick],
        redis_url=URL,
        queues=[QUEUE],
        on_startup=[open_client, say_up],
        on_shutdown=[close_client],
        grace=5,
        cron=[
            cron("* * * * * *", st.stamp.call(f"{QUEUE}:every-second"), name="every-second"),
            # runs 1.5 s, fired every second: every other tick finds it still running
            cron(
                "* * * * * *",
                st.slow_tick.call(f"{QUEUE}:slow", 1.5),
                name="slow",
                no_overlap=True,
            ),
        ],
    )


async def main() -> None:
    await worker().run(handle_signals=True)


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
