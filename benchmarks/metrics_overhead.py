"""What Prometheus metrics cost: no-op job throughput with ``--metrics-port`` and without,
in the same run, rounds interleaved (off, on, off, on, ...) so drift hits both alike.

    .venv/bin/python benchmarks/metrics_overhead.py [--jobs 50000] [--rounds 3]

Each round: a backlog of no-op jobs, one ``aioqueue run`` (uvloop), timed from the
first completion to the last (start-up not counted). Two forms: ``--processes 0``
(the middleware counts in memory) and ``--processes 1`` (a supervised child counts
into prometheus_client's multiprocess files). With metrics on, /metrics is scraped
after the round and must count every job, so the "on" rounds really counted.
Prints each round and the median ratio on/off per form. Starts its own redis-server.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anyio
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from steady_app import noop  # noqa: E402

from aioqueue import Queue  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(url: str, queue: str, processes: int, port: int | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AIOQUEUE_REDIS_URL": url, "STEADY_QUEUE": queue}
    env["PYTHONPATH"] = f"{ROOT / 'benchmarks'}:{ROOT}"
    cmd = [sys.executable, "-m", "aioqueue", "--log-level", "warning", "run", "steady_app:worker"]
    cmd += ["--processes", str(processes)]
    if port is not None:
        cmd += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    return subprocess.Popen(cmd, env=env)


def counted(port: int, queue: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "aioqueue_jobs_finished_total" and s.labels.get("queue") == queue
    )


async def round_(url: str, n: int, processes: int, metrics: bool, label: str) -> float:
    queue_name = f"overhead-{label}"
    async with Queue(url, name=queue_name) as queue:
        for start in range(0, n, 2000):
            await queue.enqueue_many(noop.call() for _ in range(min(2000, n - start)))
    r = aioredis.from_url(url)
    stats = f"aq:{{{queue_name}}}:stats"
    port = free_port() if metrics else None
    proc = start_worker(url, queue_name, processes, port)
    try:
        while int(await r.hget(stats, "complete") or 0) == 0:
            await anyio.sleep(0.001)
        t0, c0 = time.perf_counter(), int(await r.hget(stats, "complete") or 0)
        while int(await r.hget(stats, "complete") or 0) < n:
            await anyio.sleep(0.005)
        rate = (n - c0) / (time.perf_counter() - t0)
        if port is not None:
            got = await anyio.to_thread.run_sync(counted, port, queue_name)
            assert got == n, f"/metrics counted {got} of {n} jobs"
        print(
            f"  processes={processes} metrics={'on ' if metrics else 'off'} {rate:>10,.0f} jobs/s"
        )
        return rate
    finally:
        proc.terminate()
        proc.wait()
        await r.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = RedisServer()
    server.start()
    try:
        for processes in (0, 1):
            rates: dict[bool, list[float]] = {False: [], True: []}
            for i in range(args.rounds):
                for metrics in (False, True):
                    label = f"{processes}-{i}-{int(metrics)}"
                    rates[metrics].append(
                        await round_(server.url, args.jobs, processes, metrics, label)
                    )
            off, on = statistics.median(rates[False]), statistics.median(rates[True])
            print(
                f"processes={processes}: off {off:,.0f} jobs/s, on {on:,.0f} jobs/s,"
                f" on/off {on / off:.3f} (median of {args.rounds}, {args.jobs} jobs each)"
            )
    finally:
        server.cleanup()


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
