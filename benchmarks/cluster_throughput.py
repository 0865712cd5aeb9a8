"""Throughput of 4 queues on one Redis vs spread over a 3-primary Redis Cluster.

    PYTHONPATH=. .venv/bin/python benchmarks/cluster_throughput.py --jobs 40000 --processes 2

For each topology: start it (loopback, AOF off), start the worker processes
(each serves all 4 queues, concurrency 100, no-op task) and wait until they
block idle, then bulk-enqueue the jobs round-robin over the queues and time
until every job is complete (read from the queues' stats). Prints bulk enqueue
and end-to-end jobs/s per topology.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import time
from typing import Any

import anyio

from aioqueue import Queue, Worker, task
from aioqueue._protocol.keys import QueueKeys
from aioqueue.logging import configure
from tests.cluster import LocalCluster
from tests.redis_server import RedisServer, free_port

QUEUES = ["bench-a", "bench-b", "bench-c", "bench-d"]


@task(name="bench.noop", result_ttl=60)
async def noop(i: int) -> int:
    return i


def run_worker(url: str) -> None:
    configure(level="warning")  # a log line per job would be most of the work
    worker = Worker([noop], redis_url=url, queues=QUEUES, concurrency=100)
    anyio.run(lambda: worker.run(handle_signals=True), backend_options={"use_uvloop": True})


async def completed(queue: Queue) -> int:
    total = 0
    for name in QUEUES:
        key = QueueKeys(name).stats
        raw: Any = await queue.read(lambda r, key=key: r.hget(key, "complete"))
        total += int(raw or 0)
    return total


async def measure(url: str, jobs: int, processes: int) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=run_worker, args=(url,)) for _ in range(processes)]
    for proc in workers:
        proc.start()
    try:
        async with Queue(url, name=QUEUES[0]) as queue:
            await anyio.sleep(3.0)  # workers import, connect and go idle
            start = await completed(queue)
            calls = [noop.options(queue=QUEUES[i % 4]).call(i) for i in range(jobs)]
            t0 = time.perf_counter()
            for i in range(0, jobs, 2000):
                await queue.enqueue_many(calls[i : i + 2000])
            enqueued = time.perf_counter() - t0
            while await completed(queue) - start < jobs:
                await anyio.sleep(0.02)
            total = time.perf_counter() - t0
        return jobs / enqueued, jobs / total
    finally:
        for proc in workers:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in workers:
            proc.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    single = RedisServer(port=free_port())
    single.start()
    try:
        one = anyio.run(measure, single.tcp_url, args.jobs, args.processes)
    finally:
        single.cleanup()
    cluster = LocalCluster(appendonly=False)
    cluster.start()
    try:
        spread = anyio.run(measure, cluster.url, args.jobs, args.processes)
    finally:
        cluster.cleanup()
    print(f"{args.jobs} no-op jobs over 4 queues, {args.processes} worker processes x 100")
    print(f"{'topology':<28}{'bulk enqueue/s':>16}{'end-to-end jobs/s':>20}")
    for label, (enq, e2e) in (("one Redis", one), ("cluster, 3 primaries", spread)):
        print(f"{label:<28}{enq:>16,.0f}{e2e:>20,.0f}")


if __name__ == "__main__":
    main()
