"""What Prometheus metrics cost: no-op job throughput with ``--metrics-port`` and without,
in the same run, rounds interleaved (off, on, off, on, ...) so drift hits both alike.

    .venv/bin/python benchmarks/metrics_overhead.py [--jobs 30000] [--rounds 5]

Each round: a backlog of no-op jobs, one ``aioqueue run`` (uvloop), timed from the
first completion to the last (start-up not counted). Two forms: ``--processes 0``
(the middleware counts in memory) and ``--processes 1`` (a supervised child counts
into prometheus_client's multiprocess files). With metrics on, /metrics is scraped
after the round and must count every job, so the "on" rounds really counted.
Each round gives the wall-clock rate and the worker's CPU per job (its process tree, from
/proc: the steadier figure when other work shares the machine). Prints each round and,
per form, the medians over the pairs of adjacent rounds of on/off. Starts its own
redis-server.
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


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except (OSError, ValueError):
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu(k) for k in kids)


def counted(port: int, queue: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "aioqueue_jobs_finished_total" and s.labels.get("queue") == queue
    )


async def round_(
    url: str, n: int, processes: int, metrics: bool, label: str
) -> tuple[float, float]:
    """(jobs/s, CPU microseconds per job) of one round."""
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
        t0, cpu0 = time.perf_counter(), tree_cpu(proc.pid)
        c0 = int(await r.hget(stats, "complete") or 0)
        while int(await r.hget(stats, "complete") or 0) < n:
            await anyio.sleep(0.005)
        rate = (n - c0) / (time.perf_counter() - t0)
        cpu_us = (tree_cpu(proc.pid) - cpu0) / (n - c0) * 1e6
        if port is not None:
            got = await anyio.to_thread.run_sync(counted, port, queue_name)
            assert got == n, f"/metrics counted {got} of {n} jobs"
        on = "on " if metrics else "off"
        print(f"  processes={processes} metrics={on} {rate:>8,.0f} jobs/s {cpu_us:6.1f} us CPU/job")
        return rate, cpu_us
    finally:
        proc.terminate()
        proc.wait()
        await r.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    server = RedisServer()
    server.start()
    try:
        for processes in (0, 1):
            rate_ratios, cpu_ratios = [], []
            for i in range(args.rounds):
                off = await round_(server.url, args.jobs, processes, False, f"{processes}-{i}-0")
                on = await round_(server.url, args.jobs, processes, True, f"{processes}-{i}-1")
                rate_ratios.append(on[0] / off[0])
                cpu_ratios.append(on[1] / off[1])
            print(
                f"processes={processes}: throughput on/off {statistics.median(rate_ratios):.3f},"
                f" CPU per job on/off {statistics.median(cpu_ratios):.3f}"
                f" (medians of {args.rounds} pairs, {args.jobs} jobs each)"
            )
    finally:
        server.cleanup()


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
