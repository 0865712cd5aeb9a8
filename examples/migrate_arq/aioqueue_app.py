"""The app of arq_app.py moved to aioqueue (docs/migrating/arq.md walks through it).

aioqueue run examples.migrate_arq.aioqueue_app:worker     # the worker
python -m examples.migrate_arq.aioqueue_app               # enqueue, await the result
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aioqueue import Queue, Retry, Worker, current_job, task
from aioqueue.cron import cron

REDIS_URL = os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0")


async def startup(state: dict[str, Any]) -> None:
    state["greeting"] = "welcome"  # shared with every job: current_job().state


# name=: the name arq knew it by, so jobs already queued by name keep their name (and
# `python -m` of this module does not name it __main__.send_welcome)
@task(name="send_welcome", max_attempts=5, timeout=30, result_ttl=3600)
async def send_welcome(user_id: int) -> str:  # no ctx argument: typed arguments only
    job = current_job()
    if user_id < 0:
        raise Retry(defer=job.attempt * 2)
    return f"{job.state['greeting']} {user_id}"


@task(name="nightly_report")
async def nightly_report() -> None:
    print("report")


worker = Worker(
    [send_welcome],
    redis_url=REDIS_URL,
    on_startup=[startup],
    cron=[cron("0 3 * * *", nightly_report)],  # registers nightly_report too
)


async def main() -> None:
    async with Queue(REDIS_URL) as queue:
        job = await queue.enqueue(send_welcome.options(job_id="welcome-42"), 42)
        print(await job.result(timeout=10))  # the job already stored: job.created is False


if __name__ == "__main__":
    asyncio.run(main())
