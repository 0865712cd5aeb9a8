"""Runs every scenario for one library, once, inside that library's virtualenv.

    python driver.py --lib arq --url redis://127.0.0.1:PORT/0 [--quick] [--rep 0]

Prints one JSON object per figure on stdout (``run.py`` collects them); its own
progress goes to stderr, each worker's output to a log file. The driver is the
producer side (enqueues, awaits results); workers are the library's own CLI,
started as separate processes and stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

SIZES: dict[str, dict[str, int]] = {
    "full": {
        "enq": 20_000,
        "sleep": 10_000,
        "lat": 500,
        "lat_cap_s": 60,
        "cpu": 2_000,
        "delay": 200,
        "backlog": 1_000_000,
        "window": 20_000,
        "windows": 3,
    },
    "quick": {
        "enq": 3_000,
        "sleep": 2_000,
        "lat": 100,
        "lat_cap_s": 15,
        "cpu": 300,
        "delay": 40,
        "backlog": 100_000,
        "window": 5_000,
        "windows": 1,
    },
}
SCENARIOS = ["enqueue", "concurrent", "bulk", "sleep", "latency", "cpu", "backlog"]
CONCURRENT = 100  # coroutines enqueueing at once on one client (a web app's requests)
FILL_WINDOW = 200  # single enqueues in flight while pre-filling a queue (not timed)
BULK_BATCH = 1_000
LAT_WARM = 1_000_000  # ids of warm-up jobs, apart from measured ones
DELAY_BASE = 2_000_000  # ids of delayed jobs


def log(msg: str) -> None:
    print(f"[driver] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


class Driver:
    def __init__(self, lib: str, url: str, size: str, rep: int, logdir: Path) -> None:
        os.environ["BENCH_REDIS_URL"] = url
        self.lib = lib
        self.url = url
        self.size = size
        self.s = SIZES[size]
        self.rep = rep
        self.logdir = logdir
        self.mod = importlib.import_module(f"apps.{lib}_app")
        import redis.asyncio as aioredis

        self.r = aioredis.Redis.from_url(url)
        self.failed = 0
        self.runner = ""

    # -- output ---------------------------------------------------------------------

    def emit(
        self, scenario: str, metric: str, value: float | None, unit: str, **extra: Any
    ) -> None:
        rec = {
            "lib": self.lib,
            "version": self.mod.Adapter.version,
            "scenario": scenario,
            "metric": metric,
            "value": value,
            "unit": unit,
            "rep": self.rep,
            "size": self.size,
            **extra,
        }
        print(json.dumps(rec), flush=True)

    def na(self, scenario: str, metric: str, unit: str, reason: str) -> None:
        self.emit(scenario, metric, None, unit, na=reason)

    # -- plumbing -------------------------------------------------------------------

    async def reset(self) -> None:
        await self.r.flushall()

    async def adapter(self) -> Any:
        ad = self.mod.Adapter(self.url)
        await ad.open()
        return ad

    async def fill(self, ad: Any, kind: str, ids: range) -> None:
        """Pre-enqueues jobs (untimed): bulk where the library has it, else a window of awaits."""
        if ad.bulk_na is None:
            for k in range(ids.start, ids.stop, BULK_BATCH):
                await ad.enqueue_bulk(kind, [(i,) for i in range(k, min(k + BULK_BATCH, ids.stop))])
            return
        sem = asyncio.Semaphore(FILL_WINDOW)

        async def one(i: int) -> None:
            async with sem:
                await ad.enqueue(kind, i)

        for k in range(ids.start, ids.stop, 10_000):
            await asyncio.gather(*(one(i) for i in range(k, min(k + 10_000, ids.stop))))

    def start_workers(self, processes: int, concurrency: int, tag: str) -> list[Any]:
        env = dict(os.environ)
        env["BENCH_CONCURRENCY"] = str(concurrency)
        env["PYTHONPATH"] = str(HERE)
        env["PYTHONUNBUFFERED"] = "1"
        procs = []
        ad = self.mod.Adapter(self.url)
        cmds = ad.worker_cmds(processes, concurrency)
        self.runner = getattr(ad, "runner", "its CLI")
        for n, cmd in enumerate(cmds):
            out = open(self.logdir / f"{self.lib}-{tag}-{self.rep}-{n}.log", "w")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    cmd, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        return procs

    def stop_workers(self, procs: list[Any]) -> None:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # our own child's group (CLIs that fork)
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{self.lib}: worker {p.pid} ignored SIGTERM, killing")
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for p in procs:  # children a CLI forked may outlive their parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)

    async def wait_done(self, target: int, procs: list[Any], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            done = int(await self.r.get("bench:done") or 0)
            if done >= target:
                await asyncio.sleep(0.1)  # let every process flush its last batch
                return True
            if time.monotonic() > deadline:
                log(f"{self.lib}: timed out at {done}/{target}")
                return False
            if all(p.poll() is not None for p in procs):
                log(f"{self.lib}: workers exited at {done}/{target}")
                return False
            await asyncio.sleep(0.02)

    async def seen(self, ranges: list[range]) -> tuple[int, int]:
        """(missing, duplicates) among the job ids in ``ranges``, from the 4-bit counters."""
        raw: bytes = await self.r.get("bench:seen") or b""
        missing = dups = 0
        for ids in ranges:
            for i in ids:
                b = raw[i >> 1] if (i >> 1) < len(raw) else 0
                v = (b >> 4) if i % 2 == 0 else (b & 0xF)
                if v == 0:
                    missing += 1
                elif v > 1:
                    dups += v - 1
        return missing, dups

    async def procs_info(self, old: set[bytes]) -> tuple[float, float, list[str]]:
        firsts = await self.r.hgetall("bench:first")
        lasts = await self.r.hgetall("bench:last")
        loops = await self.r.hgetall("bench:loop")
        new = [pid for pid in firsts if pid not in old]
        first = min(float(firsts[p]) for p in new)
        last = max(float(lasts[p]) for p in new if p in lasts)
        return first, last, sorted({loops[p].decode() for p in new if p in loops})

    async def consume(
        self,
        scenario: str,
        n: int,
        processes: int,
        concurrency: int,
        per_job_s: float = 0,
        check_ids: bool = True,
    ) -> float | None:
        """Starts workers on ``n`` queued jobs; jobs/s from first job start to last job done."""
        tag = f"{scenario}-p{processes}-c{concurrency}"
        old = set(await self.r.hkeys("bench:first"))
        before = int(await self.r.get("bench:done") or 0)
        spawned = time.time()
        procs = self.start_workers(processes, concurrency, tag)
        try:
            timeout = 60 + n * max(per_job_s, 0.002) * 3
            ok = await self.wait_done(before + n, procs, timeout)
        finally:
            self.stop_workers(procs)
        done = int(await self.r.get("bench:done") or 0) - before
        if not ok or done == 0:
            self.emit(scenario, "jobs/s", None, "jobs/s", error=f"incomplete: {done}/{n}")
            return None
        first, last, loops = await self.procs_info(old)
        missing, dups = await self.seen([range(n)]) if check_ids else (None, None)
        rate = done / (last - first)
        self.emit(
            scenario, "jobs/s", rate, "jobs/s", n=n, done=done, missing=missing,
            duplicates=dups, loop=loops, processes=processes, concurrency=concurrency,
            startup_s=round(first - spawned, 3), wall_s=round(last - spawned, 3),
            runner=self.runner,
        )  # fmt: skip
        return rate

    # -- scenarios --------------------------------------------------------------------

    async def sc_enqueue(self) -> None:
        """(a) single awaited enqueue, then (c) those jobs on one worker process."""
        n = self.s["enq"]
        await self.reset()
        ad = await self.adapter()
        try:
            t0 = time.perf_counter()
            for i in range(n):
                await ad.enqueue("noop", i)
            dt = time.perf_counter() - t0
        finally:
            await ad.close()
        self.emit("a_enqueue", "jobs/s", n / dt, "jobs/s", n=n)
        await self.consume("c_noop_1p", n, 1, 100)

    async def sc_concurrent(self) -> None:
        """(a2) the same number of awaited enqueues from 100 coroutines on one client."""
        n = self.s["enq"]
        await self.reset()
        ad = await self.adapter()
        errors = 0

        async def producer(ids: range) -> None:
            nonlocal errors
            for i in ids:
                try:
                    await ad.enqueue("noop", i)
                except Exception as exc:
                    errors += 1
                    if errors == 1:
                        log(f"{self.lib}: concurrent enqueue failed: {exc!r}")

        per = n // CONCURRENT
        try:
            t0 = time.perf_counter()
            await asyncio.gather(
                *(producer(range(k * per, (k + 1) * per)) for k in range(CONCURRENT))
            )
            dt = time.perf_counter() - t0
        finally:
            await ad.close()
        done = per * CONCURRENT - errors
        self.emit(
            "a2_concurrent", "jobs/s", done / dt, "jobs/s", n=per * CONCURRENT, errors=errors,
            coroutines=CONCURRENT,
        )  # fmt: skip

    async def sc_bulk(self) -> None:
        """(b) bulk enqueue, then (d) those jobs on two worker processes."""
        n = self.s["enq"]
        await self.reset()
        ad = await self.adapter()
        try:
            if ad.bulk_na is None:
                t0 = time.perf_counter()
                await self.fill(ad, "noop", range(n))
                self.emit("b_bulk", "jobs/s", n / (time.perf_counter() - t0), "jobs/s", n=n)
            else:
                self.na("b_bulk", "jobs/s", "jobs/s", ad.bulk_na)
                await self.fill(ad, "noop", range(n))
        finally:
            await ad.close()
        await self.consume("d_noop_2p", n, 2, 100)

    async def sc_sleep(self) -> None:
        """(e) jobs of asyncio.sleep(0.01), concurrency 100 and 500."""
        n = self.s["sleep"]
        for conc in (100, 500):
            await self.reset()
            ad = await self.adapter()
            try:
                await self.fill(ad, "sleep", range(n))
            finally:
                await ad.close()
            await self.consume(f"e_sleep_c{conc}", n, 1, conc, per_job_s=0.01 / conc)

    async def sc_cpu(self) -> None:
        """(g) ~5 ms of pure Python per job, one then two processes."""
        from probe import burn

        t0 = time.perf_counter()
        burn()
        job_ms = (time.perf_counter() - t0) * 1000
        n = self.s["cpu"]
        for procs in (1, 2):
            await self.reset()
            ad = await self.adapter()
            try:
                await self.fill(ad, "cpu", range(n))
            finally:
                await ad.close()
            rate = await self.consume(f"g_cpu_{procs}p", n, procs, 100, per_job_s=0.01)
            log(f"{self.lib}: cpu {procs}p {rate} jobs/s (one job ~{job_ms:.1f} ms here)")

    async def sc_latency(self) -> None:
        """(f) closed loop, one job at a time; then (h) delayed-job lateness, same idle worker."""
        await self.reset()
        ad = await self.adapter()
        procs = self.start_workers(1, 100, "latency")
        try:
            for w in range(3):  # the worker is up once a job comes back
                await self.wait_result(ad, await ad.enqueue("lat", LAT_WARM + w, time.time()))
            await asyncio.sleep(0.5)
            enq: dict[int, float] = {}
            res: dict[int, float] = {}
            cap = time.monotonic() + self.s["lat_cap_s"]
            for i in range(self.s["lat"]):
                t = time.time()
                h = await ad.enqueue("lat", i, t)
                if not await self.wait_result(ad, h):
                    continue
                res[i] = time.time() - t
                enq[i] = t
                if time.monotonic() > cap:
                    break
            n = len(enq)
            await self.wait_done(n + 3, procs, 30)
            starts = {}
            for item in await self.r.lrange("bench:vals", 0, -1):
                i_s, v = item.decode().split(":", 1)
                if int(i_s) in enq:
                    starts[int(i_s)] = float(v) - enq[int(i_s)]
            missing, dups = await self.seen([range(n)])
            common = {"n": n, "missing": missing, "duplicates": dups, "waits_failed": self.failed}
            if n < self.s["lat"]:
                common["note"] = f"stopped after {self.s['lat_cap_s']} s"
            st = [v * 1000 for v in starts.values()]
            rt = [v * 1000 for v in res.values()]
            self.emit("f_latency", "enqueue→start p50", pct(st, 50), "ms", **common)
            self.emit("f_latency", "enqueue→start p99", pct(st, 99), "ms", **common)
            self.emit("f_latency", "enqueue→result p50", pct(rt, 50), "ms", **common)
            self.emit("f_latency", "enqueue→result p99", pct(rt, 99), "ms", **common)
            await self.delayed(ad, procs)
        finally:
            self.stop_workers(procs)
            await ad.close()

    async def wait_result(self, ad: Any, handle: Any) -> bool:
        """Waits for a job's result through the library; a wait that fails is counted."""
        try:
            await asyncio.wait_for(ad.result(handle), 20)
            return True
        except Exception as exc:
            self.failed += 1
            log(f"{self.lib}: waiting for a result failed: {exc!r}")
            return False

    async def delayed(self, ad: Any, procs: list[Any]) -> None:
        if ad.delayed_na is not None:
            self.na("h_delayed", "lateness p50", "ms", ad.delayed_na)
            self.na("h_delayed", "lateness p99", "ms", ad.delayed_na)
            return
        n = self.s["delay"]
        await self.r.delete("bench:vals")
        before = int(await self.r.get("bench:done") or 0)
        start = time.time() + 2.0
        for k in range(n):
            await ad.enqueue_delayed(DELAY_BASE + k, start + 2.0 * k / n)
        # no polling while jobs are due: the driver's own commands would wake Redis'
        # event loop and sharpen blocking-command timeouts for whoever relies on them
        await asyncio.sleep(max(0.0, start + 2.0 - time.time()) + 1.5)
        await self.wait_done(before + n, procs, 30)
        late = []
        for item in await self.r.lrange("bench:vals", 0, -1):
            i_s, v = item.decode().split(":", 1)
            if int(i_s) >= DELAY_BASE:
                late.append(float(v) * 1000)
        missing, dups = await self.seen([range(DELAY_BASE, DELAY_BASE + n)])
        extra = {"n": n, "missing": missing, "duplicates": dups}
        self.emit("h_delayed", "lateness p50", pct(late, 50) if late else None, "ms", **extra)
        self.emit("h_delayed", "lateness p99", pct(late, 99) if late else None, "ms", **extra)

    async def sc_backlog(self) -> None:
        """(j) Redis memory per queued job, then (i) throughput with that backlog queued."""
        n = self.s["backlog"]
        await self.reset()
        await self.r.execute_command("MEMORY", "PURGE")
        mem0 = int((await self.r.info("memory"))["used_memory"])
        ad = await self.adapter()
        try:
            t0 = time.perf_counter()
            await self.fill(ad, "noop", range(n))
            log(f"{self.lib}: backlog of {n} filled in {time.perf_counter() - t0:.1f} s")
        finally:
            await ad.close()
        mem1 = int((await self.r.info("memory"))["used_memory"])
        self.emit("j_memory", "bytes/job", (mem1 - mem0) / n, "bytes", n=n)
        for _ in range(self.s["windows"]):
            await self.consume("i_backlog", self.s["window"], 1, 100, check_ids=False)
        _, dups = await self.seen([range(n)])
        self.emit("i_backlog", "duplicates", dups, "jobs", n=n)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rep", type=int, default=0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--logdir", default=None)
    args = ap.parse_args()
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="bench-logs-"))
    logdir.mkdir(parents=True, exist_ok=True)
    d = Driver(args.lib, args.url, "quick" if args.quick else "full", args.rep, logdir)
    for name in args.scenarios.split(","):
        log(f"{args.lib} rep {args.rep}: {name}")
        t0 = time.monotonic()
        try:
            await getattr(d, f"sc_{name}")()
        except Exception as exc:  # one broken scenario must not hide the others
            log(f"{args.lib}: {name} failed: {exc!r}")
            d.emit(name, "error", None, "", error=repr(exc))
        log(f"{args.lib}: {name} took {time.monotonic() - t0:.1f} s")
    await d.r.aclose()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    import uvloop  # every producer runs on uvloop too

    uvloop.run(main())
