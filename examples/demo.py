"""``make demo``: a private Redis, ``aioqueue run --processes 2``, a mix of jobs, a clean stop.

Run from anywhere: ``python examples/demo.py``. It needs a redis-server binary
(``make demo`` installs one) and nothing else; it exits 0 in a few seconds.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aioqueue import JobFailed, Queue  # noqa: E402
from aioqueue._redis.devredis import DevRedis  # noqa: E402
from aioqueue.admin import Admin  # noqa: E402
from examples.demo_tasks import (  # noqa: E402
    charge_card,
    count_primes,
    fetch_page,
    send_reminder,
)


def say(text: str = "") -> None:
    print(text, flush=True)


async def wait_for_workers(admin: Admin, queue: str, n: int, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while (await admin.queue(queue)).workers_alive < n:
            await anyio.sleep(0.1)  # a demo watching from outside: polling the registry is fine


async def live_counts(admin: Admin, queue: str, done: dict[str, int], total: int) -> None:
    while True:
        q = await admin.queue(queue)
        say(
            f"  queued={q.queued:<3} scheduled={q.scheduled:<2} active={q.active:<3}"
            f" finished={done['n']:>2}/{total}"
        )
        await anyio.sleep(0.3)


async def produce(url: str, queue: str) -> None:
    async with Admin(url) as admin, Queue(url, name=queue) as q:
        say("waiting for 2 worker processes ...")
        await wait_for_workers(admin, queue, 2)
        # a burst of CPU-bound jobs onto two idle processes: each holds one at a time
        primes = await q.enqueue_many(count_primes.call(400_000 + i) for i in range(4))
        pages = await q.enqueue_many(
            fetch_page.call(f"https://example.com/page/{i}") for i in range(24)
        )
        reminder = await q.enqueue(send_reminder.options(delay=1.5), "stand-up in 5 minutes")
        payment = await q.enqueue(charge_card, 1042)
        jobs: list[Any] = [*primes, *pages, reminder, payment]
        say(f"enqueued {len(jobs)} jobs: 4 CPU-bound, 24 I/O-bound, 1 delayed 1.5s, 1 failing")

        done = {"n": 0}
        outcomes: dict[str, Any] = {}

        async def wait(job: Any) -> None:
            try:
                outcomes[job.id] = await job.result(timeout=30)
            except JobFailed as exc:
                outcomes[job.id] = exc
            done["n"] += 1

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(live_counts, admin, queue, done, len(jobs))
            async with anyio.create_task_group() as waiters:
                for job in jobs:
                    waiters.start_soon(wait, job)
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - started
        say(f"all {len(jobs)} jobs finished in {elapsed:.2f}s ({len(jobs) / elapsed:.1f} jobs/s)\n")

        by_pid = Counter(outcomes[j.id]["pid"] for j in pages)
        say(f"I/O-bound pages per worker process: {dict(by_pid)}")
        for job in primes:
            r = outcomes[job.id]
            say(f"primes below {r['limit']}: {r['primes']} (process {r['pid']})")
        cpu_by_pid = Counter(outcomes[j.id]["pid"] for j in primes)
        say(
            f"CPU-bound jobs per worker process: {dict(cpu_by_pid)} (a process holds only"
            " the CPU-bound jobs it can run at once, so a burst spreads over the processes)"
        )
        say(f"delayed job: {outcomes[reminder.id]!r}")
        err = outcomes[payment.id]
        say(f"failing job: {err.exc_type}: {err.exc_message}\n")

        info = await admin.queue(queue)
        say(
            f"aioqueue info: {info.finished_last_minute} jobs finished in the last minute;"
            f" counters {info.stats}"
        )
        for dead in await admin.dead_jobs(queue, 5):
            say(
                f"dead letter: {dead.id} {dead.task} after {dead.attempts} attempts:"
                f" {dead.error_type}: {dead.error_message}"
            )


def main() -> int:
    queue = f"demo-{secrets.token_hex(3)}"
    with DevRedis(ROOT / ".aioqueue") as url:
        say(f"embedded Redis at {url}")
        env = {
            **os.environ,
            "AIOQUEUE_REDIS_URL": url,
            "AIOQUEUE_QUEUES": queue,
            "AIOQUEUE_LOG_LEVEL": os.environ.get("AIOQUEUE_LOG_LEVEL", "warning"),
            "PYTHONPATH": str(ROOT),
        }
        cmd = ["aioqueue", "run", "examples.demo_tasks:worker", "--processes", "2"]
        say("$ " + " ".join(cmd))
        supervisor = subprocess.Popen(
            [sys.executable, "-m", *cmd], env=env, cwd=ROOT, stdin=subprocess.DEVNULL
        )
        try:
            anyio.run(produce, url, queue)
        finally:
            say("\nstopping the workers with SIGTERM ...")
            supervisor.send_signal(signal.SIGTERM)
            code = supervisor.wait(timeout=60)
        say(f"supervisor exited with code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
