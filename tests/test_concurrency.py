"""The concurrency model (docs/architecture.md): a job's own anyio deadline and a fast stop
of its worker landing in the same pass of the event loop.

A job's timer is one ``asyncio.Timeout``; a stop ends a running job by moving that timer
to now, which cancels the job's task natively. Job code that uses anyio has cancel scopes
of its own, and anyio#1214 is a scope that takes a native cancel arriving in the same loop
pass as its own for its own. Either way the delivery must end once: one outcome written,
and the worker's run returns without an error.
"""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import JobStatus, Queue, Worker, task

pytestmark = pytest.mark.anyio

RACE: dict[str, Any] = {}


@task(max_attempts=3, timeout=3600)
async def races_the_stop() -> str:
    with anyio.fail_after(3600) as scope:
        RACE["scope"] = scope
        RACE["started"].set()
        await RACE["go"].wait()
    return "woken"


@pytest.mark.parametrize(
    ("first", "outcome", "status"),
    [
        # the stop's native cancel is there first: the job is handed back
        ("stop", "release", JobStatus.QUEUED),
        # the job's own deadline is first: it timed out, a failed attempt to retry
        ("deadline", "retry", JobStatus.SCHEDULED),
    ],
)
async def test_a_jobs_anyio_deadline_passing_as_its_worker_stops_ends_it_once(
    redis_url: str, queue: Queue, queue_name: str, first: str, outcome: str, status: JobStatus
) -> None:
    RACE.update(started=anyio.Event(), go=anyio.Event())
    job_id = f"race-{secrets.token_hex(4)}"
    worker = Worker([races_the_stop], redis_url=redis_url, queues=[queue_name], grace=3600)
    marker = f"done-{job_id}"
    written: list[str] = []  # the outcome of each finish item for this job, as Redis got it
    client = aioredis.from_url(redis_url, socket_timeout=None)
    try:
        async with client.monitor() as monitor:
            seen = anyio.Event()

            async def watch() -> None:
                async for entry in monitor.listen():
                    words = entry["command"].split(" ")
                    if words[0].upper() == "ECHO" and marker in words:
                        seen.set()
                        return
                    if words[0].upper() == "FCALL" and words[1].endswith("_finish"):
                        written.extend(words[i + 2] for i, w in enumerate(words) if w == job_id)

            with anyio.fail_after(30):  # a hang fails the test, it does not stall the suite
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    async with anyio.create_task_group() as runner:
                        await runner.start(worker.run)
                        job = await queue.enqueue(races_the_stop.options(job_id=job_id))
                        await RACE["started"].wait()
                        # one synchronous block, no await: every cancel below is asked for
                        # before the job's task runs again, so all land in one loop pass
                        steps = {
                            "stop": lambda: (worker.stop(), worker.stop()),
                            "deadline": lambda: setattr(
                                RACE["scope"], "deadline", anyio.current_time()
                            ),
                        }
                        steps[first]()
                        steps["deadline" if first == "stop" else "stop"]()
                        RACE["go"].set()
                    # worker.run returned, and raised nothing: the worker exited cleanly
                    await client.echo(marker)  # MONITOR shows it after every earlier command
                    await seen.wait()
    finally:
        await client.aclose()
    assert written == [outcome]
    assert len(worker._run.deliveries) == 0
    info = await job.info()
    assert info.status is status
