"""Workers run as real processes by the tests (``aioqueue run tests.apps:worker``)."""

from __future__ import annotations

import os

from aioqueue import Worker
from tests import tasks

worker = Worker(
    [
        tasks.add,
        tasks.multiply,
        tasks.echo,
        tasks.boom,
        tasks.sleepy,
        tasks.whoami,
        tasks.blocking_sleep,
        tasks.signal_and_sleep,
        tasks.rendezvous,
    ],
    redis_url=os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0"),
    queues=[os.environ.get("TEST_QUEUE", "default")],
    lease=float(os.environ.get("TEST_LEASE", "30")),
    grace=float(os.environ.get("TEST_GRACE", "30")),
)


async def _fail_at_startup(state: dict[str, object]) -> None:
    raise RuntimeError("this worker fails at startup, every time")


def crashing() -> Worker:
    """A worker factory whose worker crashes at startup: a supervisor must back off."""
    return Worker(
        [tasks.add],
        redis_url=os.environ.get("AIOQUEUE_REDIS_URL", "redis://localhost:6379/0"),
        queues=[os.environ.get("TEST_QUEUE", "default")],
        on_startup=[_fail_at_startup],
    )
