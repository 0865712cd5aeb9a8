"""CPU-bound bursts over processes, and what fair dispatch costs I/O-bound jobs.

    .venv/bin/python benchmarks/cpu_bursts.py [--bursts 4,40,400] [--ms 50] [--io-jobs 20000]

- Bursts of N jobs of ~50 ms pure Python, enqueued in one call onto idle
  workers; wall time from the enqueue to the last result, for
  `aioqueue run --processes 1`, `--processes 2` and one worker process with a
  2-process pool (`executor="process"`, `AIOQUEUE_PROCESS_POOL=2`), taking
  turns. The ratio is the 1-process time over the other, per repetition
  (median, range); the target is >= 1.8 for 2 processes. Each line also says
  how busy the processes that ran jobs were kept (job time over wall time:
  what dispatch loses, whatever the CPU's speed at the moment) and how many
  cores other programs, and the hypervisor (steal), took meanwhile; the
  machine's own ceiling (the same spins in 2 plain processes against 1) is
  printed at the start and the end: on a shared machine the figures must be
  read against those.
- No-op throughput (a backlog of --io-jobs, first completion to last, one
  process) of a worker with only I/O-bound tasks (the claim's plain path) and
  of one that also registers a CPU-bound task (every claim classifies each job
  by its task name): fair dispatch should cost nothing measurable.
Prints the load average before and after each part. Starts its own redis-server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from cpu_app import burn, burn_in_pool, noop, spin  # noqa: E402

from aioqueue import Queue  # noqa: E402
from aioqueue.admin import Admin  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def calibrate(ms: float) -> int:
    """Iterations of ``spin`` that take ``ms`` here (fastest of a few tries)."""
    n = 200_000
    best = min(_timed(n) for _ in range(5))
    return int(n * (ms / 1000) / best)


def _timed(n: int) -> float:
    t0 = time.perf_counter()
    spin(n)
    return time.perf_counter() - t0


def ceiling(n: int, jobs: int = 8) -> float:
    """What the machine itself gives: ``jobs`` spins in 2 plain processes against 1
    (no queue at all); the ratio the benchmark can reach at best, now."""
    import multiprocessing

    def timed(processes: int) -> float:
        ctx = multiprocessing.get_context("fork")  # the harness is single-threaded here
        t0 = time.perf_counter()
        with ctx.Pool(processes) as pool:
            pool.map(spin, [n] * jobs)
        return time.perf_counter() - t0

    return statistics.median(timed(1) / timed(2) for _ in range(3))


def start(url: str, queue: str, target: str, processes: int, env: dict[str, str]) -> Any:
    full = {**os.environ, "AIOQUEUE_REDIS_URL": url, "CPU_BENCH_QUEUE": queue, **env}
    full["PYTHONPATH"] = f"{ROOT / 'benchmarks'}:{ROOT}"
    cmd = [sys.executable, "-m", "aioqueue", "--log-level", "warning", "run", target]
    return subprocess.Popen([*cmd, "--processes", str(processes)], env=full)


async def wait_workers(url: str, queue: str, n: int) -> None:
    async with Admin(url) as admin:
        with anyio.fail_after(60):
            while (await admin.queue(queue)).workers_alive < n:
                await anyio.sleep(0.05)  # the harness watching from outside: polling is fine


class CpuShare:
    """CPU seconds the whole machine and this harness's processes (the driver, its
    Redis, supervisors, workers, pool processes) used since ``start``: the
    difference is what other programs took while we measured."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.machine0, self.ours0, self.t0 = self._machine(), self._ours(), time.monotonic()

    def _machine(self) -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # all but idle and iowait; steal (the hypervisor's) counts as taken from us
        return (sum(fields[:8]) - fields[3] - fields[4]) / self.tick

    def _ours(self) -> float:
        stats: dict[int, tuple[int, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                cpu = sum(int(x) for x in fields[11:15]) / self.tick  # with reaped children
                stats[int(entry)] = (int(fields[1]), cpu)
        me = os.getpid()

        def ours(pid: int) -> bool:
            while pid > 1:
                if pid == me:
                    return True
                pid = stats.get(pid, (0, 0.0))[0]
            return False

        return sum(cpu for pid, (_, cpu) in stats.items() if ours(pid))

    def others(self) -> float:
        """Cores other programs (and the hypervisor: steal) took on average since ``start``."""
        wall = time.monotonic() - self.t0
        used = (self._machine() - self.machine0) - (self._ours() - self.ours0)
        return max(0.0, used / wall) if wall > 0 else 0.0


async def burst(
    url: str, queue: str, task: Any, jobs: int, n: int
) -> tuple[float, int, float, float]:
    """Seconds from the enqueue of ``jobs`` jobs to the last result, processes that
    ran them, how busy those were kept (job seconds / wall x processes: what the
    dispatch lost, whatever the speed of the CPU at the time), and the cores
    other programs used meanwhile."""
    async with Queue(url, name=queue) as q:
        runs: list[tuple[int, float, float]] = []
        share = CpuShare()
        t0 = time.perf_counter()
        handles = await q.enqueue_many(task.call(n) for _ in range(jobs))

        async def wait(job: Any) -> None:
            runs.append(tuple(await job.result(timeout=600)))  # type: ignore[arg-type]

        async with anyio.create_task_group() as tg:
            for job in handles:
                tg.start_soon(wait, job)
        wall = time.perf_counter() - t0
        used = len({pid for pid, _, _ in runs})
        busy = sum(end - start for _, start, end in runs) / (wall * used)
        return wall, used, busy, share.others()


CONFIGS = [
    ("--processes 1", "cpu_app:threads", 1, {}, burn),
    ("--processes 2", "cpu_app:threads", 2, {}, burn),
    ("1 process, pool of 2", "cpu_app:pool", 1, {"AIOQUEUE_PROCESS_POOL": "2"}, burn_in_pool),
]


async def bursts(url: str, sizes: list[int], n: int, reps: int) -> dict[int, list[list[float]]]:
    """Per burst size, per repetition, the wall time of each config. All configs'
    workers start first (idle ones cost nothing) and take turns, so a load that
    drifts during the run weighs on each alike."""
    procs = [start(url, f"cpu-{i}", c[1], c[2], c[3]) for i, c in enumerate(CONFIGS)]
    out: dict[int, list[list[float]]] = {}
    try:
        for i, config in enumerate(CONFIGS):
            await wait_workers(url, f"cpu-{i}", config[2])
            await burst(url, f"cpu-{i}", config[4], 2, n)  # warm: imports, first claims
        for size in sizes:
            out[size] = []
            for _ in range(reps if size < 400 else 1):
                row = []
                for i, (label, _, _, _, task) in enumerate(CONFIGS):
                    seconds, used, busy, others = await burst(url, f"cpu-{i}", task, size, n)
                    row.append(seconds)
                    print(
                        f"  burst {size:4d}  {label:22s} {seconds:7.3f} s  {used} processes ran"
                        f" jobs, busy {busy:.0%} of the time; other programs used"
                        f" {others:.2f} cores; load {load()}",
                        flush=True,
                    )
                out[size].append(row)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
    return out


async def throughput(url: str, target: str, jobs: int, label: str) -> float:
    queue = f"io-{label}-{time.monotonic_ns()}"
    async with Queue(url, name=queue) as q:
        for i in range(0, jobs, 2000):
            await q.enqueue_many(noop.call() for _ in range(min(2000, jobs - i)))
    r = aioredis.from_url(url)
    stats = f"aq:{{{queue}}}:stats"
    proc = start(url, queue, target, 1, {})
    try:
        while int(await r.hget(stats, "complete") or 0) == 0:
            await anyio.sleep(0.001)
        t0, c0 = time.perf_counter(), int(await r.hget(stats, "complete") or 0)
        while int(await r.hget(stats, "complete") or 0) < jobs:
            await anyio.sleep(0.005)
        return (jobs - c0) / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait()
        await r.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bursts", default="4,40,400")
    ap.add_argument("--ms", type=float, default=50.0)
    ap.add_argument("--reps", type=int, default=9, help="repetitions of bursts under 400")
    ap.add_argument("--io-jobs", type=int, default=20_000)
    ap.add_argument("--io-reps", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.bursts.split(",") if s]  # --bursts '': throughput only
    n = calibrate(args.ms)
    print(f"machine: {os.cpu_count()} CPUs, load {load()}; {n:,} iterations = {args.ms:g} ms here")
    print(f"machine ceiling: 2 plain processes do the same spins {ceiling(n):.2f}x as fast as 1")
    server = RedisServer()
    server.start()
    try:
        print("CPU-bound bursts (wall time, enqueue to last result):")
        times = await bursts(server.url, sizes, n, args.reps) if sizes else {}
        for label_index in (1, 2) if sizes else ():
            cells = []
            for size, rows in times.items():
                ratios = sorted(row[0] / row[label_index] for row in rows)
                cells.append(
                    f"{size}: {statistics.median(ratios):.2f}x"
                    + (f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else "")
                )
            label = CONFIGS[label_index][0]
            print(f"  ratio --processes 1 / {label}: " + ", ".join(cells))
        print(f"no-op throughput, 1 process (load {load()}):")
        rates: dict[str, list[float]] = {"io_only": [], "threads": []}
        for _ in range(args.io_reps):  # alternated, so drifting load hits both alike
            for target in rates:
                rates[target].append(
                    await throughput(server.url, f"cpu_app:{target}", args.io_jobs, target)
                )
        plain, fair = (statistics.median(rates[t]) for t in ("io_only", "threads"))
        print(f"  without a CPU-bound task (plain claim): {plain:9,.0f} jobs/s  {rates['io_only']}")
        print(f"  with one (claims classify every job):   {fair:9,.0f} jobs/s  {rates['threads']}")
        print(f"  ratio: {fair / plain:.3f}; load at the end {load()}")
        print(f"machine ceiling at the end: {ceiling(n):.2f}x")
    finally:
        server.cleanup()


if __name__ == "__main__":
    anyio.run(main, backend_options={"use_uvloop": True})
