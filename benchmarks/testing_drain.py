"""aioqueue.testing's speed: the wall time of issue #16's four scenarios.

    .venv/bin/python benchmarks/testing_drain.py                 # 5 runs each, asyncio
    .venv/bin/python benchmarks/testing_drain.py --runs 10 --loop uvloop

Runs what a user's test would, on the plugin's private redis-server (unix
socket) with its test build of the Functions and the test clock, one worker in
this event loop (``run_worker``):

  retries   a task with 3 retries and exponential backoff of minutes
            (``max_attempts=4, backoff=60``): ``clock.advance(minutes=10)``
  delayed   a job delayed by a day: ``clock.advance(days=1)``
  cron      ``0 9 * * *`` over three days: ``clock.advance(days=3)``, 3 ticks
  thousand  1,000 jobs that fail twice (``backoff=1``): 3,000 attempts, about
            2,000 distinct due times, ``clock.advance(seconds=5)``

Each figure is from the first enqueue (the start of ``advance`` for cron) to
the last result, with the worker already running; ``+start`` adds starting
and stopping the worker (``run_worker``'s block). The tests assert order and
counts; the wall-clock targets (under 1 s for the first three, under 2 s for
the thousand) are read here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import anyio
import structlog

from aioqueue import Queue, Worker, current_job, task
from aioqueue.cron import cron
from aioqueue.testing import TestClock, run_worker
from aioqueue.testing._env import Environment, install_library, set_current
from aioqueue.testing._server import PrivateRedis

ticks: list[str] = []


@task(max_attempts=4, backoff=60)
async def flaky() -> str:
    if current_job().attempt <= 3:
        raise ConnectionError("upstream down")
    return "done"


@task
async def stamp() -> str:
    return "ok"


@task(max_attempts=3, backoff=1)
async def fails_twice(n: int) -> int:
    if current_job().attempt <= 2:
        raise RuntimeError(f"attempt {current_job().attempt}")
    return n * 2


@task
async def report() -> None:
    ticks.append(current_job().job_id)


def worker() -> Worker:
    return Worker(
        [flaky, stamp, fails_twice, report],
        cron=[cron("0 9 * * *", report, name="report")],
        concurrency=100,
    )


async def retries(queue: Queue, clock: TestClock) -> None:
    job = await queue.enqueue(flaky)
    await clock.advance(minutes=10)
    assert await job.result(timeout=5) == "done"


async def delayed(queue: Queue, clock: TestClock) -> None:
    job = await queue.enqueue(stamp.options(delay=timedelta(days=1)))
    await clock.advance(days=1)
    assert await job.result(timeout=5) == "ok"


async def daily(queue: Queue, clock: TestClock) -> None:
    ticks.clear()
    await clock.advance(days=3)
    assert len(ticks) == 3, ticks


async def thousand(queue: Queue, clock: TestClock) -> None:
    jobs = await queue.enqueue_many(fails_twice.call(i) for i in range(1000))
    await clock.advance(seconds=5)
    assert [await job.result(timeout=5) for job in jobs] == [i * 2 for i in range(1000)]


SCENARIOS: dict[str, Callable[[Queue, TestClock], Awaitable[None]]] = {
    "retries": retries,
    "delayed": delayed,
    "cron": daily,
    "thousand": thousand,
}


async def one(
    url: str, scenario: Callable[[Queue, TestClock], Awaitable[None]]
) -> tuple[float, float]:
    env = Environment.prepare(url)
    set_current(env)
    try:
        clock = TestClock(env)
        async with Queue(url) as queue:
            began = time.perf_counter()
            async with run_worker(worker()):
                started = time.perf_counter()
                await scenario(queue, clock)
                ran = time.perf_counter() - started
            return ran, time.perf_counter() - began
    finally:
        set_current(None)


async def main(url: str, runs: int, only: list[str]) -> None:
    print(f"{'scenario':<10} {'median':>8} {'min':>8} {'max':>8} {'+start':>8}  ({runs} runs)")
    for name in only:
        figures = [await one(url, SCENARIOS[name]) for _ in range(runs)]
        ran = [r for r, _ in figures]
        whole = statistics.median(w for _, w in figures)
        print(
            f"{name:<10} {statistics.median(ran):>7.3f}s {min(ran):>7.3f}s {max(ran):>7.3f}s"
            f" {whole:>7.3f}s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    # the workers' logs are formatted as in a test (pytest captures them), then dropped
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(devnull))
    server = PrivateRedis()
    server.start()
    try:
        import redis

        with redis.Redis.from_url(server.url) as client:
            install_library(client)
        anyio.run(
            main,
            server.url,
            args.runs,
            args.scenarios.split(","),
            backend_options={"use_uvloop": args.loop == "uvloop"},
        )
    finally:
        server.cleanup()
