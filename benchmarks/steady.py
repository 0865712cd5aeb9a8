"""aioqueue alone, measured the way its closing notes quote it.

    .venv/bin/python benchmarks/steady.py [--jobs 100000] [--processes 1]

- steady throughput: a backlog of no-op jobs, one `aioqueue run` (uvloop), timed
  from the first completion to the last, so start-up is not counted;
- the same for ~5 ms CPU-bound jobs with 1 and 2 processes;
- closed-loop latency over 1,000 jobs: enqueue -> job start, job end -> `await job`
  returns (same host: time.monotonic is shared by processes on Linux).
Redis and worker CPU use come from /proc. Starts its own redis-server.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from steady_app import burn, noop, stamp  # noqa: E402

from aioqueue import Queue  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def start_worker(url: str, queue: str, processes: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AIOQUEUE_REDIS_URL": url, "STEADY_QUEUE": queue}
    env["PYTHONPATH"] = f"{ROOT / 'benchmarks'}:{ROOT}"
    cmd = [sys.executable, "-m", "aioqueue", "--log-level", "warning", "run"]
    return subprocess.Popen([*cmd, "--processes", str(processes), "steady_app:worker"], env=env)


async def throughput(url: str, task: object, n: int, processes: int, label: str) -> None:
    queue_name = f"steady-{label.replace(' ', '-')}-{processes}"
    async with Queue(url, name=queue_name) as queue:
        for start in range(0, n, 2000):
            await queue.enqueue_many(task.call() for _ in range(min(2000, n - start)))  # type: ignore[attr-defined]
    r = aioredis.from_url(url)
    stats = f"aq:{{{queue_name}}}:stats"
    proc = start_worker(url, queue_name, processes)
    try:
        while int(await r.hget(stats, "complete") or 0) == 0:
            await anyio.sleep(0.001)
        t0, c0 = time.perf_counter(), int(await r.hget(stats, "complete") or 0)
        while int(await r.hget(stats, "complete") or 0) < n:
            await anyio.sleep(0.005)
        dt = time.perf_counter() - t0
        print(f"{label:10s} processes={processes}  {(n - c0) / dt:>10,.0f} jobs/s  ({n} jobs)")
    finally:
        proc.terminate()
        proc.wait()
        await r.aclose()


async def latency(url: str, n: int) -> None:
    proc = start_worker(url, "steady", 1)
    try:
        async with Queue(url, name="steady") as queue:
            await (await queue.enqueue(stamp)).result(timeout=30)
            to_start, to_seen = [], []
            for _ in range(n):
                t0 = time.monotonic()
                started = await (await queue.enqueue(stamp)).result(timeout=10)
                t1 = time.monotonic()
                to_start.append((started - t0) * 1000)
                to_seen.append((t1 - started) * 1000)
        for name, xs in [("enqueue -> start", to_start), ("job end -> await", to_seen)]:
            print(f"{name:18s} p50 {pct(xs, 50):.3f} ms  p99 {pct(xs, 99):.3f} ms  ({n} jobs)")
    finally:
        proc.terminate()
        proc.wait()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--cpu-jobs", type=int, default=4_000)
    ap.add_argument("--latency-jobs", type=int, default=1_000)
    args = ap.parse_args()
    server = RedisServer()
    server.start()
    try:
        await throughput(server.url, noop, args.jobs, 1, "no-op")
        await throughput(server.url, noop, args.jobs, 2, "no-op")
        await throughput(server.url, burn, args.cpu_jobs, 1, "cpu 5ms")
        await throughput(server.url, burn, args.cpu_jobs, 2, "cpu 5ms")
        await latency(server.url, args.latency_jobs)
    finally:
        server.cleanup()


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
