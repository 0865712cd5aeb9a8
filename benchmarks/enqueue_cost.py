"""What one awaited ``enqueue`` costs, on each side of the link, one command.

    PYTHONPATH=. .venv/bin/python benchmarks/enqueue_cost.py [--calls 3000] [--reps 6]
        [--before 64578fe]

(issues #13 and #18: "single awaited enqueue does not regress". The rate of one
coroutine awaiting one enqueue after another is a round trip each: client CPU, the
link, and Redis running the Function. On this shared machine the rate alone moves
±15% between runs; this splits it into parts that move less.)

Starts its own redis-server (loopback TCP, no persistence). Each repetition runs
every mode once, in turn (starting with another mode each time), each in a fresh
child process of the same Python, on the same Redis:

- on: the default Queue (the event stream on: each enqueue appends its entry);
- off: ``events_maxlen=0`` (no event stream);
- before: the code of ``--before`` (a git revision; by default 64578fe, the last
  before the restructure, the middleware seam and the event stream), checked out
  into a temporary worktree.

Per run: ``--calls`` awaited ``enqueue`` calls of a small job, one after another,
after one untimed call (connected, Functions loaded) and ``gc.collect(); gc.freeze()``.
Figures: the rate; the client's CPU per call (this process's user + system time);
Redis's time per call inside the Function (``INFO commandstats``: usec of FCALL over
its calls, taken around the run; only the child talks to this Redis meanwhile); and
Redis's whole CPU per call (``INFO cpu``: user + system, which also counts reading
the request and writing the reply). Medians over the repetitions, each with its
ratio to "before" (or to "on" without one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worktree import checkout  # noqa: E402  (this directory: run as a script)

from tests.redis_server import RedisServer, free_port  # noqa: E402

# Run in the child, under either checkout's code: only API every release has
# (Queue(url, name=), enqueue), and events_maxlen only when the mode asks for it.
CHILD = """
import gc, json, sys, time, uvloop
from aioqueue import Queue
from tests import tasks
url, name, calls, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
options = {"events_maxlen": 0} if events == "off" else {}

async def main():
    async with Queue(url, name=name, **options) as queue:
        await queue.enqueue(tasks.add, 0, 0)
        gc.collect(); gc.freeze()
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(calls):
            await queue.enqueue(tasks.add, i, 1)
        rate = calls / (time.perf_counter() - t0)
        print(json.dumps([rate, (time.process_time() - c0) / calls * 1e6]))

uvloop.run(main())
"""

MODES = ("on", "off", "before")


def redis_counters(r: redis.Redis) -> tuple[float, int, float]:
    """FCALL's total usec and calls, and the server's CPU seconds (user + system)."""
    fcall = r.info("commandstats").get("cmdstat_fcall", {"usec": 0, "calls": 0})
    cpu = r.info("cpu")
    return fcall["usec"], fcall["calls"], cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def one_run(r: redis.Redis, tree: str, mode: str, url: str, name: str, calls: int) -> list[float]:
    path = tree if mode == "before" else str(ROOT)
    cmd = [sys.executable, "-c", CHILD, url, name, str(calls), mode]
    env = {**os.environ, "PYTHONPATH": path}
    # the first call, the library load and the interpreter's start are outside the
    # timed part for the client; for Redis the untimed call is one FCALL of calls + 1
    u0, c0, cpu0 = redis_counters(r)
    done = subprocess.run(cmd, env=env, cwd=path, check=True, capture_output=True, text=True)
    u1, c1, cpu1 = redis_counters(r)
    rate, client_us = json.loads(done.stdout.strip().splitlines()[-1])
    n = max(1, c1 - c0)
    return [rate, client_us, (u1 - u0) / n, (cpu1 - cpu0) / n * 1e6]


def main(calls: int, reps: int, before: str) -> None:
    server = RedisServer(port=free_port())
    server.start()
    r = redis.Redis.from_url(server.url)
    modes = [m for m in MODES if before or m != "before"]
    runs: dict[str, list[list[float]]] = {m: [] for m in modes}
    try:
        with checkout(before) as tree:
            for rep in range(reps):
                for mode in modes[rep % len(modes) :] + modes[: rep % len(modes)]:
                    name = f"e-{mode}-{rep}"
                    runs[mode].append(one_run(r, tree, mode, server.url, name, calls))
                print(f"rep {rep + 1}/{reps} done (load average {os.getloadavg()[0]:.2f})",
                      flush=True)  # fmt: skip
    finally:
        r.close()
        server.cleanup()
    base = "before" if before else "on"
    medians = {m: [statistics.median(run[i] for run in runs[m]) for i in range(4)] for m in modes}
    print(f"\n{calls} awaited enqueue calls per run, {reps} reps; medians (ratio to {base})")
    heads = ("rate /s", "client CPU us", "Redis in FCALL us", "Redis CPU us")
    print(f"{'':>8}" + "".join(f"{h:>26}" for h in heads))
    for m in modes:
        cells = [f"{v:12,.1f} ({v / medians[base][i]:5.3f})" for i, v in enumerate(medians[m])]
        print(f"{m:>8}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--before", default="64578fe", help="git revision to compare with ('': none)")
    args = ap.parse_args()
    main(args.calls, args.reps, args.before)
