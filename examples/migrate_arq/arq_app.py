"""A small arq app: the "before" of docs/migrating/arq.md (aioqueue_app.py is the "after").

    arq examples.migrate_arq.arq_app.WorkerSettings     # the worker
    python -m examples.migrate_arq.arq_app              # enqueue, await the result

Runs under arq 0.28 (which needs redis-py < 6, so not in aioqueue's own venv:
`make test` builds .venv-arq from requirements-arq.txt to test it).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from arq import Retry, create_pool, cron
from arq.connections import RedisSettings

REDIS = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))


async def startup(ctx: dict[str, Any]) -> None:
    ctx["greeting"] = "welcome"  # an HTTP client or a DB pool in a real app


async def send_welcome(ctx: dict[str, Any], user_id: int) -> str:
    if user_id < 0:
        raise Retry(defer=ctx["job_try"] * 2)  # arq: retried until max_tries
    return f"{ctx['greeting']} {user_id}"


async def nightly_report(ctx: dict[str, Any]) -> None:
    print("report")


class WorkerSettings:
    functions: ClassVar = [send_welcome]
    cron_jobs: ClassVar = [cron(nightly_report, hour=3, minute=0)]
    on_startup = startup
    redis_settings = REDIS
    max_tries = 5
    job_timeout = 30
    keep_result = 3600


async def main() -> None:
    redis = await create_pool(REDIS)
    job = await redis.enqueue_job("send_welcome", 42, _job_id="welcome-42")
    assert job is not None  # None: a job with that id exists already
    print(await job.result(timeout=10))
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
