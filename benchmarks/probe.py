"""What every benchmark task calls: counts the jobs a worker process ran, off the hot path.

Each task body calls ``PROBE.hit(job_index)`` (and an optional value). The
probe keeps the ids in memory and a background task of the worker's own event
loop flushes them to Redis every ``FLUSH_EVERY`` seconds in one pipeline:

    BITFIELD bench:seen INCRBY u4 #i 1 ...   one 4-bit counter per job (duplicates)
    INCRBY   bench:done n                  how many ran (the driver waits on it)
    HSET     bench:first / bench:last pid  first job start, last job end, wall clock
    HSET     bench:loop pid                which event loop ran the job
    RPUSH    bench:vals "i:value"          per-job values (latency, lateness)

So counting costs no round trip per job, and the same code runs in every
library's worker. Works with redis-py 5 and 8 (each peer venv has one).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

FLUSH_EVERY = 0.02
CHUNK = 2000
CPU_ITERS = 130_000  # about 5 ms of pure Python on the 2-core project machine


def burn(iters: int = CPU_ITERS) -> int:
    """The CPU-bound job: a pure Python loop, no I/O, holds the GIL."""
    x = 0
    for k in range(iters):
        x += k * k % 7
    return x


class Probe:
    def __init__(self) -> None:
        self.url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.ids: list[int] = []
        self.vals: list[str] = []
        self.first = 0.0
        self.last = 0.0
        self.task: asyncio.Task[None] | None = None

    def hit(self, i: int, val: float | None = None) -> None:
        now = time.time()
        if self.task is None:
            self._start(now)
        self.ids.append(i)
        if val is not None:
            self.vals.append(f"{i}:{val!r}")
        self.last = now

    def _start(self, now: float) -> None:
        self.first = now
        loop = asyncio.get_running_loop()
        self.loop_name = f"{type(loop).__module__}.{type(loop).__name__}"
        self.task = loop.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        import redis.asyncio as aioredis

        pid = str(os.getpid())  # at first job, not at import: some CLIs fork after importing
        r = aioredis.Redis.from_url(self.url)
        try:
            await r.hset("bench:first", pid, repr(self.first))
            await r.hset("bench:loop", pid, self.loop_name)
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                if not self.ids:
                    continue
                ids, self.ids = self.ids, []
                vals, self.vals = self.vals, []
                pipe = r.pipeline(transaction=False)
                for k in range(0, len(ids), CHUNK):
                    ops: list[object] = ["OVERFLOW", "SAT"]
                    for i in ids[k : k + CHUNK]:
                        ops += ["INCRBY", "u4", f"#{i}", 1]
                    pipe.execute_command("BITFIELD", "bench:seen", *ops)
                if vals:
                    pipe.rpush("bench:vals", *vals)
                pipe.hset("bench:last", pid, repr(self.last))
                pipe.incrby("bench:done", len(ids))
                await pipe.execute()
        except Exception as exc:  # the harness must see a broken probe, not hang on it
            print(f"probe: flush failed: {exc!r}", file=sys.stderr, flush=True)
            raise


PROBE = Probe()
