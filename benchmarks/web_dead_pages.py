"""The dashboard with 1,000,000 dead jobs: how long the first page, a page deep
in the set, a search by id and a text search take to answer (issue #15 asks
under 200 ms each on the project machine).

    .venv/bin/python benchmarks/web_dead_pages.py               # 1,000,000 dead jobs
    .venv/bin/python benchmarks/web_dead_pages.py --jobs 10     # the same with ten

Starts its own redis-server (unix socket), loads the dead jobs with one Lua
script per 100,000 (tests/web_helpers.py), serves the dashboard with
``aioqueue dashboard`` (uvicorn, a process of its own, loopback TCP) and asks
it over HTTP with httpx, one request at a time, ``--repeat`` times per kind:
wall time from request to the whole answer read, the HTML pages with their
template, the JSON with its encoding. (Client and server in one event loop
measured ~45 ms of loopback scheduling per request, whatever the page: so the
server has its own process, as it would in production.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.redis_server import RedisServer, free_port
from tests.web_helpers import load_dead

QUEUE = "shop"


async def main(jobs: int, repeat: int) -> None:
    server = RedisServer()
    server.start()
    try:
        redis = Redis.from_url(server.url)
        started = time.perf_counter()
        await load_dead(redis, QUEUE, jobs)
        print(f"loaded {jobs:,} dead jobs in {time.perf_counter() - started:.1f} s")
        memory = (await redis.info("memory"))["used_memory_human"]
        print(f"Redis memory: {memory}")
        await redis.aclose()
        port = free_port()
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aioqueue",
                "dashboard",
                "--port",
                str(port),
                "--queue",
                QUEUE,
                "--redis-url",
                server.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        assert web.stdout is not None
        for line in web.stdout:  # uvicorn says when it listens
            if b"Uvicorn running" in line:
                break
        # its access log goes on: read it away so the pipe never fills
        threading.Thread(target=web.stdout.read, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            first = client.get("/api/jobs", params={"queue": QUEUE, "state": "dead"}).json()
            rows = first["rows"]
            # a cursor about 90 % of the way in (the 50th newest when there are few)
            deep_rank = min(len(rows) - 1, 49) if jobs < 1000 else int(jobs * 0.9)
            deep_id = f"dead-{jobs - 1 - deep_rank}"
            deep_score = rows[0]["score_ms"] - deep_rank
            kinds = {
                "first page (JSON)": ("/api/jobs", {"queue": QUEUE, "state": "dead"}),
                "first page (HTML)": ("/queue", {"name": QUEUE, "state": "dead"}),
                "deep page (JSON)": (
                    "/api/jobs",
                    {"queue": QUEUE, "state": "dead", "cursor": f"{deep_score}.0:{deep_id}"},
                ),
                "deep page (HTML)": (
                    "/queue",
                    {"name": QUEUE, "state": "dead", "cursor": f"{deep_score}.0:{deep_id}"},
                ),
                "search by id (JSON)": (
                    "/api/jobs",
                    {"queue": QUEUE, "state": "dead", "q": f"dead-{jobs // 2}"},
                ),
                "search by id (HTML)": (
                    "/queue",
                    {"name": QUEUE, "state": "dead", "q": f"dead-{jobs // 2}"},
                ),
                "text search, 1,000 read (JSON)": (
                    "/api/jobs",
                    {"queue": QUEUE, "state": "dead", "q": "declined"},
                ),
            }
            print(f"{'request':34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for name, (path, params) in kinds.items():
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    answer = client.get(path, params=params)
                    answer.read()
                    times.append((time.perf_counter() - t0) * 1000)
                    assert answer.status_code == 200, (name, answer.text[:300])
                times.sort()
                p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
                print(f"{name:34} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}")
        web.terminate()
        web.wait(timeout=10)
    finally:
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.repeat))
