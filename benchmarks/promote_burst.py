"""How long a Function call takes while a burst of delayed jobs comes due at once.

    .venv/bin/python benchmarks/promote_burst.py                 # 200,000 jobs
    .venv/bin/python benchmarks/promote_burst.py --jobs 1000000

Starts its own redis-server (loopback TCP, no persistence), schedules ``--jobs``
no-op jobs due at the same instant, and runs one in-process worker (uvloop,
concurrency 50) until all of them completed. Each claim promotes at most
``PROMOTE_LIMIT`` due jobs (tests/chaos asserts that count); this reports what
that bound costs in time: the slowest FCALLs Redis logged (SLOWLOG, threshold
``--slower-than`` microseconds), and the FCALL count and mean from INFO
commandstats.
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import UTC, datetime, timedelta

import anyio
import redis.asyncio as aioredis
from delay_lateness import start_redis  # this directory: run as a script

from aioqueue import Queue, Worker, task
from aioqueue._protocol.functions import PROMOTE_LIMIT
from aioqueue._protocol.keys import QueueKeys
from aioqueue.logging import configure

QUEUE = "bench-burst"


@task(name="bench.burst_noop", result_ttl=0)
async def noop() -> None:
    return None


async def burst(url: str, jobs: int, slower_than: int) -> None:
    redis = aioredis.from_url(url)
    due = datetime.now(UTC) + timedelta(seconds=2 + jobs / 100_000)
    async with Queue(url, name=QUEUE) as queue:
        for _ in range(0, jobs, 5000):
            await queue.enqueue_many(noop.options(at=due).call() for _ in range(5000))
    await redis.config_set("slowlog-log-slower-than", slower_than)
    await redis.slowlog_reset()
    await redis.config_resetstat()
    started = time.perf_counter()
    worker = Worker([noop], redis_url=url, queues=[QUEUE], concurrency=50)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        stats = QueueKeys(QUEUE).stats
        while int(await redis.hget(stats, "complete") or 0) < jobs:
            await anyio.sleep(0.05)
        worker.stop()
    elapsed = time.perf_counter() - started
    slow = [e for e in await redis.slowlog_get(128) if e["command"][:5].upper() == b"FCALL"]
    fcall = (await redis.info("commandstats")).get("cmdstat_fcall", {})
    durations = sorted((e["duration"] for e in slow), reverse=True)
    print(
        f"{jobs} jobs due at once, promote limit {PROMOTE_LIMIT}: worker done after {elapsed:.1f}s"
    )
    print(f"FCALL calls {fcall.get('calls')}, mean {fcall.get('usec_per_call')} us")
    print(f"FCALLs over {slower_than} us: {len(slow)}; slowest (us): {durations[:10]}")
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--slower-than", type=int, default=5000, help="microseconds")
    args = parser.parse_args()
    configure(level="warning")
    proc, url, workdir = start_redis()
    try:
        anyio.run(burst, url, args.jobs, args.slower_than, backend_options={"use_uvloop": True})
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
