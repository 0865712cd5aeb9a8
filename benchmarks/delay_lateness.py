"""Delayed-job figures: how late delayed jobs start, and what an idle worker costs.

    .venv/bin/python benchmarks/delay_lateness.py            # all three runs
    .venv/bin/python benchmarks/delay_lateness.py --jobs 200 --spread 2   # quicker

Starts its own redis-server (loopback TCP, no persistence) and one in-process
worker (uvloop, concurrency 100), as the brief's figures ask:

  idle   1,000 jobs delayed by random amounts over ``--spread`` seconds, the
         worker otherwise idle: each start is a timed wake-up from BLPOP.
  busy   the same while a producer process keeps the worker running no-op
         jobs back to back.
  cost   10,000 jobs scheduled an hour ahead, the worker idle: Redis commands
         per second (INFO commandstats delta over ``--idle-seconds``, the
         benchmark's own INFO calls taken out).

Lateness = Redis TIME read by the job when it starts, minus its due time (both
Redis clock); so it includes the claim, the hand-over and one round trip.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio
import redis.asyncio as aioredis

from aioqueue import Queue, Worker, current_job, task
from aioqueue._protocol.keys import QueueKeys
from aioqueue.logging import configure

QUEUE = "bench-delay"
_starts: dict[str, float] = {}


@task(name="bench.probe", result_ttl=60)
async def probe() -> None:
    client: aioredis.Redis = current_job().state["redis"]
    seconds, micros = await client.time()
    _starts[current_job().job_id] = seconds * 1000 + micros / 1000


@task(name="bench.noop", result_ttl=0)
async def noop() -> None:
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="aioqueue-bench-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url, workdir
        except OSError:
            time.sleep(0.02)  # an external process starting: nothing to wait on
    sys.exit("redis-server did not start")


def feeder(url: str, stop_at: float) -> None:
    """Keeps a backlog of no-op jobs so the worker is never idle (runs in a child)."""

    async def main() -> None:
        async with Queue(url, name=QUEUE) as queue:
            keys = QueueKeys(QUEUE)
            while time.time() < stop_at:
                if await queue.redis.llen(keys.ready) < 2000:
                    await queue.enqueue_many([noop.call() for _ in range(500)])
                else:
                    await anyio.sleep(0.005)

    configure(level="warning")
    anyio.run(main, backend_options={"use_uvloop": True})


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def lateness_run(url: str, jobs: int, spread: float, busy: bool) -> dict[str, float]:
    _starts.clear()
    redis = aioredis.from_url(url)
    await redis.flushall()

    async def open_client(state: dict[str, Any]) -> None:
        state["redis"] = redis

    async def nothing(state: dict[str, Any]) -> None:
        return None

    worker = Worker(
        [probe, noop],
        redis_url=url,
        queues=[QUEUE],
        concurrency=100,
        on_startup=[open_client],
        on_shutdown=[nothing],
    )
    rng = random.Random(1)
    child = None
    async with Queue(url, name=QUEUE) as queue, anyio.create_task_group() as tg:
        await tg.start(worker.run)
        if busy:
            ctx = multiprocessing.get_context("spawn")
            child = ctx.Process(target=feeder, args=(url, time.time() + spread + 3))
            child.start()
            await anyio.sleep(1.0)  # let the backlog build up before the first due time
        handles = await queue.enqueue_many(
            [probe.options(delay=0.5 + rng.uniform(0, spread)).call() for _ in range(jobs)]
        )
        with anyio.fail_after(spread + 60):
            while len(_starts) < jobs:
                await anyio.sleep(0.05)
        noops = int(await redis.hget(QueueKeys(QUEUE).stats, "complete") or 0) - jobs
        worker.stop()
        worker.stop()
    if child is not None:
        child.join()
    dues = {}
    for job in handles:
        dues[job.id] = int(await redis.hget(QueueKeys(QUEUE).job(job.id), "due") or 0)
    await redis.aclose()
    late = [_starts[j] - dues[j] for j in dues]
    return {
        "p50": percentile(late, 50),
        "p99": percentile(late, 99),
        "max": max(late),
        "min": min(late),
        "noops_run": noops,
    }


async def idle_cost(url: str, scheduled: int, seconds: float) -> dict[str, float]:
    redis = aioredis.from_url(url)
    await redis.flushall()
    worker = Worker([probe, noop], redis_url=url, queues=[QUEUE], concurrency=100)
    async with Queue(url, name=QUEUE) as queue, anyio.create_task_group() as tg:
        for start in range(0, scheduled, 1000):
            await queue.enqueue_many(
                [probe.options(delay=3600 + i / 1000).call() for i in range(start, start + 1000)]
            )
        await tg.start(worker.run)
        await anyio.sleep(1.0)  # past start-up
        await redis.config_resetstat()
        t0 = time.monotonic()
        await anyio.sleep(seconds)
        stats = await redis.info("commandstats")
        elapsed = time.monotonic() - t0
        processed = int((await redis.info("stats"))["total_commands_processed"])
        worker.stop()
        worker.stop()
    await redis.aclose()
    calls = {name: int(v["calls"]) for name, v in stats.items()}
    calls.pop("cmdstat_info", None)  # the benchmark's own
    calls.pop("cmdstat_config|resetstat", None)
    # commandstats also counts the commands a Function runs inside Redis (TIME,
    # ZRANGE, ...); the commands a worker sends are FCALL, BLPOP and CLIENT ...
    sent = sum(n for name, n in calls.items() if name in _CLIENT_COMMANDS)
    return {
        "sent_per_s": sent / elapsed,
        "all_per_s": sum(calls.values()) / elapsed,
        "processed": processed,
        "seconds": elapsed,
        **calls,
    }


_CLIENT_COMMANDS = {
    "cmdstat_fcall",
    "cmdstat_blpop",
    "cmdstat_client|unblock",
    "cmdstat_client|id",
    "cmdstat_ping",
    "cmdstat_subscribe",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds the due times span")
    parser.add_argument("--scheduled", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    configure(level="warning")  # a line per job would be the benchmark's main cost
    proc, url, workdir = start_redis()
    try:

        async def run() -> None:
            for busy in (False, True):
                got = await lateness_run(url, args.jobs, args.spread, busy)
                label = "busy" if busy else "idle"
                print(
                    f"{label}: {args.jobs} delayed jobs over {args.spread:g}s: lateness "
                    f"p50 {got['p50']:.2f} ms, p99 {got['p99']:.2f} ms, max {got['max']:.2f} ms, "
                    f"min {got['min']:.2f} ms"
                    + (f"; no-ops run {got['noops_run']}" if busy else "")
                )
            cost = await idle_cost(url, args.scheduled, args.idle_seconds)
            detail = {k: v for k, v in cost.items() if k.startswith("cmdstat")}
            print(
                f"idle worker, {args.scheduled} jobs due in an hour: "
                f"{cost['sent_per_s']:.2f} commands/s sent by the worker "
                f"({cost['all_per_s']:.2f}/s counting those run inside Functions) "
                f"over {cost['seconds']:.1f}s: {detail}"
            )

        anyio.run(run, backend_options={"use_uvloop": os.environ.get("BENCH_UVLOOP", "1") == "1"})
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
