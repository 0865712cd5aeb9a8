"""The producer's path alone: enqueue rates and the client's CPU per call.

    PYTHONPATH=. .venv/bin/python benchmarks/client_path.py [--jobs 20000] [--reps 3]

Starts its own redis-server (loopback TCP) and one worker process
(``aioqueue run tests.apps:worker``), then, on one ``Queue``:

- sequential: one coroutine, ``await queue.enqueue(...)`` in a loop;
- concurrent: 100 coroutines doing the same on the shared ``Queue``;
- pairs: 200 coroutines doing ``enqueue`` + ``await job`` (a web request's work).

For each: calls/s, the client process's CPU (user + system) per call, and
Redis's side per call: the time it spent in FCALL (``INFO commandstats``) and
its CPU, both counting the worker's claims and finishes of those jobs too
(``--pause-worker`` stops the worker during the enqueue-only cases, so they
count the enqueues alone). The load average is printed beside, since the
machine is shared. ``--cases`` picks some of the cases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aioqueue import Queue  # noqa: E402
from aioqueue._protocol.keys import QueueKeys  # noqa: E402
from tests import tasks  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def redis_side(redis: Any) -> tuple[float, float]:
    """(microseconds spent in FCALL, seconds of CPU) of the server so far."""
    stats = await redis.info("commandstats")
    fcall = stats.get("cmdstat_fcall", {}).get("usec", 0)
    info = await redis.info("cpu")
    return float(fcall), float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(
    name: str, n: int, run: Callable[[], Awaitable[None]], redis: Any, paused: bool
) -> None:
    f0, r0 = await redis_side(redis)
    c0, t0 = cpu(), time.perf_counter()
    await run()
    dt, used = time.perf_counter() - t0, cpu() - c0
    f1, r1 = await redis_side(redis)
    print(
        f"{name:>10}: {n / dt:9,.0f}/s  client CPU {used / n * 1e6:5.1f} us/call"
        f"  redis FCALL {(f1 - f0) / n:4.1f} us, CPU {(r1 - r0) / n * 1e6:4.1f} us/call"
        f"{' (worker paused)' if paused else ''}"
        f"  (load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )


async def main(jobs: int, reps: int, cases: list[str], pause_worker: bool) -> None:
    server = RedisServer(port=free_port())
    server.start()
    env = {
        **os.environ,
        "AIOQUEUE_REDIS_URL": server.url,
        "TEST_QUEUE": "bench",
        "PYTHONPATH": str(ROOT),
        "AIOQUEUE_LOG_LEVEL": "warning",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "aioqueue", "run", "tests.apps:worker", "--processes", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with Queue(server.tcp_url, name="bench") as queue:
            await (await queue.enqueue(tasks.add, 0, 0)).result(timeout=60)

            async def sequential() -> None:
                for i in range(jobs):
                    await queue.enqueue(tasks.add, i, 1)

            async def concurrent() -> None:
                async def one(k: int) -> None:
                    for i in range(k):
                        await queue.enqueue(tasks.add, i, 1)

                await asyncio.gather(*(one(jobs // 100) for _ in range(100)))

            async def pairs() -> None:
                async def one(k: int) -> None:
                    for i in range(k):
                        await (await queue.enqueue(tasks.add, i, 1)).result(timeout=60)

                await asyncio.gather(*(one(jobs // 200) for _ in range(200)))

            runs = {"sequential": sequential, "concurrent": concurrent, "pairs": pairs}
            for _ in range(reps):
                for case in cases:
                    paused = pause_worker and case != "pairs"
                    if paused:
                        worker.send_signal(signal.SIGSTOP)
                    try:
                        await measure(case, jobs, runs[case], queue.redis, paused)
                    finally:
                        if paused:
                            worker.send_signal(signal.SIGCONT)
                    if paused:  # the worker drains what piled up before the next case
                        while await queue.redis.llen(QueueKeys("bench").ready):
                            await asyncio.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--cases",
        default="sequential,concurrent,pairs",
        help="comma-separated, among sequential, concurrent, pairs",
    )
    ap.add_argument("--pause-worker", action="store_true")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if unknown := set(cases) - {"sequential", "concurrent", "pairs"}:
        ap.error(f"unknown cases: {sorted(unknown)}")
    uvloop.run(main(args.jobs, args.reps, cases, args.pause_worker))
