"""What the event stream costs: no-op throughput with it on (the default cap) and off
(``events_maxlen=0``), in the same run, on the same Redis.

    .venv/bin/python benchmarks/events_cost.py                  # 20,000 jobs, 5 rounds each
    .venv/bin/python benchmarks/events_cost.py --jobs 50000 --rounds 3

Starts its own redis-server (loopback TCP, no persistence). Each round enqueues
``--jobs`` no-op jobs into a fresh queue with ``enqueue_many`` (batches of 1,000),
then runs one in-process worker (uvloop, concurrency 100) in burst mode until the
queue is drained; on and off rounds alternate, so drift on the machine hits both.
Throughput is jobs / the worker's run time (start-up included, a few ms); the
enqueue rate is timed apart. On a shared 2-core machine wall-clock rates are noisy,
so each round also reads the Redis time spent in Functions (INFO commandstats,
FCALL usec, reset per round): the stream's cost on the one thing that does not
scale out, and stable from run to run. Prints the median of each and the ratios on / off, and
the stream's length and memory after an "on" round.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import anyio
import redis.asyncio as aioredis
from delay_lateness import start_redis  # this directory: run as a script

from aioqueue import Queue, Worker, task
from aioqueue._protocol.keys import EVENTS_MAXLEN, QueueKeys
from aioqueue.logging import configure

BATCH = 1000


@task(name="bench.events_noop", result_ttl=0)
async def noop() -> None:
    return None


async def fcall_us(redis: aioredis.Redis) -> float:
    """Microseconds Redis spent in FCALL since the last CONFIG RESETSTAT."""
    return float((await redis.info("commandstats")).get("cmdstat_fcall", {}).get("usec", 0))


async def one_round(url: str, queue: str, jobs: int, maxlen: int) -> tuple[float, float, float]:
    """(enqueue jobs/s, worker jobs/s, Redis µs in Functions per job) of one round."""
    redis = aioredis.from_url(url)
    await redis.config_resetstat()
    async with Queue(url, name=queue, events_maxlen=maxlen) as producer:
        started = time.perf_counter()
        for _ in range(0, jobs, BATCH):
            await producer.enqueue_many(noop.call() for _ in range(BATCH))
        enqueued = time.perf_counter() - started
    worker = Worker(
        [noop], redis_url=url, queues=[queue], concurrency=100, burst=True, events_maxlen=maxlen
    )
    started = time.perf_counter()
    await worker.run()
    ran = time.perf_counter() - started
    assert worker.jobs_done == jobs, (worker.jobs_done, jobs)
    redis_us = await fcall_us(redis) / jobs
    await redis.aclose()
    return jobs / enqueued, jobs / ran, redis_us


async def bench(url: str, jobs: int, rounds: int) -> None:
    results: dict[str, list[tuple[float, float, float]]] = {"on": [], "off": []}
    redis = aioredis.from_url(url)
    await one_round(url, "bench-events-warmup", 2000, EVENTS_MAXLEN)  # imports, library load
    stream_len = stream_bytes = stream_events = 0
    for i in range(rounds):
        for mode, maxlen in (
            (("on", EVENTS_MAXLEN), ("off", 0))
            if i % 2 == 0
            else (("off", 0), ("on", EVENTS_MAXLEN))
        ):
            queue = f"bench-events-{mode}-{i}"
            results[mode].append(await one_round(url, queue, jobs, maxlen))
            if mode == "on":
                key = QueueKeys(queue).events
                stream_len = await redis.xlen(key)
                stream_bytes = int(await redis.memory_usage(key) or 0)
                # events kept: an entry of several jobs says how many (field n)
                entries = await redis.xrange(key, "-", "+")
                stream_events = sum(int(f.get(b"n", 1)) for _, f in entries)
            else:
                assert not await redis.exists(QueueKeys(queue).events)
    await redis.aclose()
    med = {m: [statistics.median(r[k] for r in results[m]) for k in (0, 1, 2)] for m in results}
    print(f"{jobs} no-op jobs per round, {rounds} rounds each, 1 worker (concurrency 100, uvloop)")
    for mode in ("on", "off"):
        runs = ", ".join(f"{w:,.0f}" for _, w, _ in results[mode])
        print(
            f"  events {mode:<3}: worker {med[mode][1]:,.0f} jobs/s (rounds: {runs}),"
            f" enqueue_many {med[mode][0]:,.0f} jobs/s, Redis time in Functions"
            f" {med[mode][2]:.2f} us/job"
        )
    print(
        f"  ratio on/off: worker {med['on'][1] / med['off'][1]:.3f},"
        f" enqueue_many {med['on'][0] / med['off'][0]:.3f},"
        f" Redis time per job {med['on'][2] / med['off'][2]:.3f}"
    )
    print(
        f"  stream after an 'on' round: {stream_len} entries holding {stream_events} events,"
        f" {stream_bytes / 1e6:.2f} MB ({stream_bytes / max(stream_events, 1):.0f} bytes/event)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure(level="warning")
    proc, url, workdir = start_redis()
    try:
        anyio.run(bench, url, args.jobs, args.rounds, backend_options={"use_uvloop": True})
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
