"""Checked by mypy in `make test`: a cron job's arguments are checked like an enqueue's.

The ``type: ignore[...]`` lines must stay errors (warn_unused_ignores).
"""

from __future__ import annotations

from datetime import timedelta

from aioqueue import task
from aioqueue.cron import CronJob, cron, every


@task
async def report(kind: str, top: int = 10) -> str:
    return kind * top


@task
async def ping() -> None:
    return None


ok: list[CronJob] = [
    cron("*/5 * * * *", report.call("daily", top=3), timezone="Europe/Paris"),
    cron("0 * * * * *", ping, no_overlap=True),
    every(timedelta(seconds=30), ping),
    every(30, report.options(queue="reports").call("hourly")),
]

bad: list[CronJob] = [
    cron("* * * * *", report),  # type: ignore[arg-type]
    cron("* * * * *", report.call(42)),  # type: ignore[arg-type]
    every(30, report.call("x", nope=1)),  # type: ignore[call-arg]
]
