"""What observability costs aioqueue: no-op throughput with each part off and on, one run.

    PYTHONPATH=. .venv/bin/python benchmarks/otel_overhead.py [--jobs 20000] [--reps 5]
        [--before 64578fe]
    PYTHONPATH=. .venv/bin/python benchmarks/otel_overhead.py --instructions
        [--modes off,metrics+noop] [--small 300] [--large 1300]

(issue #14's benchmark: metrics and a no-op tracer on against off, and everything off
against the code before any of it.)

Starts its own redis-server (loopback TCP). Each repetition runs every mode, in turn
(starting with another mode each time), on the same Redis, each run in a fresh child
process of the same Python (so that no mode inherits another's threads, such as the
SDK's span processor, or heap), so that they share the machine's state:

- dark: everything off: no middleware and no event stream (``events_maxlen=0``);
- off: no middleware, the event stream on (the default: what ratios are taken against);
- metrics+noop: ``PrometheusMiddleware`` (a registry of its own) and
  ``OpenTelemetryMiddleware`` with no-op providers, together;
- bare: a middleware with the same hooks doing nothing (what the seam itself costs);
- noop: ``OpenTelemetryMiddleware`` with the API's no-op tracer and meter providers
  (what an app that installs the extra but configures no SDK gets);
- sdk: the SDK's TracerProvider (always sampling, a BatchSpanProcessor whose exporter
  drops the spans) and MeterProvider (an in-memory reader, never read): every span
  and measurement made for real, nothing exported;
- before: the same two figures with the code of ``--before`` (a git revision; by
  default 64578fe, the last before the middleware seam and the event stream), checked
  out into a temporary worktree. "dark" against "before" is everything off against
  before.

Two figures per mode: the worker (``--jobs`` no-op jobs queued beforehand with
``enqueue_many``, then one in-process burst Worker, concurrency 100, drains them:
process + settle spans) and the producer (``--jobs // 4`` awaited ``enqueue`` calls
one after another: send spans). For each: the median rate, and the median CPU time of
this process per job (steadier than the rate on a shared machine), each with its
ratio to off. Each timed part starts with ``gc.collect(); gc.freeze()``, as ``aioqueue
run`` does before its worker runs (and so in "before" too): the objects the imports
made, more with the extras, are then not walked by every full collection, a cost of
heap size rather than of the hooks.

``--instructions``: the same two figures as instructions per job, counted by
valgrind's callgrind (which must be installed), for the modes of ``--modes``. On a
shared machine the CPU time of a run moves 10-20 %; instruction counts move well under
1 %, so they settle "within 5 %" where the rates cannot. Each mode runs three times
under callgrind: worker and producer parts of S and S jobs, L and S, S and L (S =
``--small``, L = ``--large``); the queue is filled beforehand by another process, and
a part's figure is the difference of two counts over L - S, so imports and start-up
cancel out. (Instructions are not time: cache misses and branch mispredictions are not
counted.) Slow: a minute or two per run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worktree import checkout  # noqa: E402  (this directory: run as a script)

import aioqueue.logging  # noqa: E402
from aioqueue import Queue, Worker  # noqa: E402
from aioqueue.middleware import Middleware  # noqa: E402
from tests import tasks  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

# OpenTelemetry and prometheus_client are imported by the modes that use them, in their
# own child process: a run without them has the smaller heap that "before" has (a
# larger one makes each full garbage collection cost more, which is not the seam's).


def sdk_middleware() -> list[Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from aioqueue.otel import OpenTelemetryMiddleware

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropped()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return [OpenTelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider)]


class Bare(Middleware):
    """The same hooks doing nothing: what the seam itself costs."""

    def before_enqueue(self, enqueue: Any) -> None:
        pass

    def after_enqueue(self, enqueue: Any, error: Any) -> None:
        pass

    def before_attempt(self, attempt: Any) -> None:
        pass

    def after_attempt(self, attempt: Any, result: Any) -> None:
        pass

    def on_settled(self, attempt: Any, result: Any) -> None:
        pass


def noop_tracing() -> list[Any]:
    from opentelemetry import metrics, trace

    from aioqueue.otel import OpenTelemetryMiddleware

    return [
        OpenTelemetryMiddleware(
            tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
        )
    ]


def metrics_and_noop() -> list[Any]:
    from prometheus_client import CollectorRegistry

    from aioqueue.prometheus import PrometheusMiddleware

    return [PrometheusMiddleware(CollectorRegistry()), *noop_tracing()]


DARK = object()  # the mode whose event stream is off too

MODES: dict[str, Any] = {
    "dark": lambda: [DARK],
    "off": lambda: [],
    "metrics+noop": metrics_and_noop,
    "bare": lambda: [Bare()],
    "noop": noop_tracing,
    "sdk": sdk_middleware,
}


Figure = tuple[float, float]  # (jobs or calls per second, this process's CPU us per job)


def split(middleware: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    if DARK in middleware:
        return [m for m in middleware if m is not DARK], {"events_maxlen": 0}
    return middleware, {}


async def worker_rate(
    url: str, queue_name: str, jobs: int, middleware: list[Any], filled: bool = False
) -> Figure:
    middleware, options = split(middleware)
    if not filled:
        async with Queue(url, name=queue_name, middleware=middleware, **options) as queue:
            for start in range(0, jobs, 5000):
                calls = [tasks.add.call(i, 1) for i in range(start, min(jobs, start + 5000))]
                await queue.enqueue_many(calls)
    worker = Worker(
        [tasks.add],
        redis_url=url,
        queues=[queue_name],
        concurrency=100,
        burst=True,
        middleware=middleware,
        **options,
    )
    gc.collect()
    gc.freeze()
    c0, t0 = time.process_time(), time.perf_counter()
    await worker.run()
    return jobs / (time.perf_counter() - t0), (time.process_time() - c0) / jobs * 1e6


async def producer_rate(url: str, queue_name: str, calls: int, middleware: list[Any]) -> Figure:
    middleware, options = split(middleware)
    async with Queue(url, name=queue_name, middleware=middleware, **options) as queue:
        await queue.enqueue(tasks.add, 0, 0)  # connected and the Functions loaded
        gc.collect()
        gc.freeze()
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(calls):
            await queue.enqueue(tasks.add, i, 1)
        return calls / (time.perf_counter() - t0), (time.process_time() - c0) / calls * 1e6


# the two figures with another checkout's code, in a child process (printed as JSON);
# only API that every release has: Queue(url, name=), enqueue, enqueue_many, Worker(burst=)
BEFORE = """
import gc, json, sys, time, uvloop
from aioqueue import Queue, Worker
import aioqueue.logging
from tests import tasks
url, name, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = int(sys.argv[4]) if len(sys.argv) > 4 else jobs // 4
filled = len(sys.argv) > 5 and sys.argv[5] == "filled"
aioqueue.logging.configure(level="warning")

async def main():
    if not filled:
        async with Queue(url, name=name) as queue:
            for start in range(0, jobs, 5000):
                await queue.enqueue_many(
                    [tasks.add.call(i, 1) for i in range(start, min(jobs, start + 5000))]
                )
    worker = Worker([tasks.add], redis_url=url, queues=[name], concurrency=100, burst=True)
    gc.collect(); gc.freeze()
    c0, t0 = time.process_time(), time.perf_counter()
    await worker.run()
    out = [jobs / (time.perf_counter() - t0), (time.process_time() - c0) / jobs * 1e6]
    async with Queue(url, name=name + "-p") as queue:
        await queue.enqueue(tasks.add, 0, 0)
        gc.collect(); gc.freeze()
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(calls):
            await queue.enqueue(tasks.add, i, 1)
        out += [calls / (time.perf_counter() - t0), (time.process_time() - c0) / calls * 1e6]
    print(json.dumps(out))

uvloop.run(main())
"""


# fills a queue with the code of the tree on PYTHONPATH (API every release has)
FILL = """
import sys, uvloop
from aioqueue import Queue
from tests import tasks
url, name, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    async with Queue(url, name=name) as queue:
        for start in range(0, jobs, 5000):
            await queue.enqueue_many(
                [tasks.add.call(i, 1) for i in range(start, min(jobs, start + 5000))]
            )

uvloop.run(main())
"""


def counted(tree: str, mode: str, url: str, name: str, jobs: int, calls: int) -> int:
    """Instructions of one run of ``mode`` under callgrind: a worker draining ``jobs``
    queued jobs, then ``calls`` awaited enqueues."""
    code = tree if mode == "before" else str(ROOT)
    env = {**os.environ, "PYTHONPATH": code}
    fill = [sys.executable, "-c", FILL, url, name, str(jobs)]
    subprocess.run(fill, env=env, cwd=code, check=True, capture_output=True)
    if mode == "before":
        cmd = [sys.executable, "-c", BEFORE, url, name, str(jobs), str(calls), "filled"]
    else:
        cmd = [sys.executable, __file__, "--child", mode, url, name, "--jobs", str(jobs)]
        cmd += ["--calls", str(calls), "--filled"]
    grind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]
    done = subprocess.run(grind, env=env, cwd=code, check=True, capture_output=True, text=True)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"no instruction count from callgrind: {done.stderr[-500:]}")


def instructions(modes: list[str], before: str, small: int, large: int) -> None:
    server = RedisServer(port=free_port())
    server.start()
    per: dict[str, tuple[float, float]] = {}
    try:
        with checkout(before if "before" in modes else "") as tree:
            for mode in modes:
                base = counted(tree, mode, server.url, f"i-{mode}-ss", small, small)
                worker = counted(tree, mode, server.url, f"i-{mode}-ls", large, small)
                producer = counted(tree, mode, server.url, f"i-{mode}-sl", small, large)
                per[mode] = ((worker - base) / (large - small), (producer - base) / (large - small))
                print(f"{mode:>12}: counted (load average {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        server.cleanup()
    ref = per.get("off") or next(iter(per.values()))
    print(f"\ninstructions per job (callgrind; {large} - {small} jobs), ratio to off")
    for mode, (w, p) in per.items():
        print(f"{mode:>12}: worker {w:9,.0f} ({w / ref[0]:.3f})"
              f"  producer {p:9,.0f} ({p / ref[1]:.3f})")  # fmt: skip


def child_figures(tree: str, mode: str, url: str, name: str, jobs: int) -> tuple[Figure, Figure]:
    """One run of ``mode`` in a fresh process: this file's ``--child``, or for "before"
    the BEFORE script under the old checkout's code."""
    if mode == "before":
        cmd = [sys.executable, "-c", BEFORE, url, name, str(jobs)]
        env, cwd = {**os.environ, "PYTHONPATH": tree}, tree
    else:
        cmd = [sys.executable, __file__, "--child", mode, url, name, "--jobs", str(jobs)]
        env, cwd = {**os.environ, "PYTHONPATH": str(ROOT)}, str(ROOT)
    done = subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    w_rate, w_cpu, p_rate, p_cpu = json.loads(done.stdout.strip().splitlines()[-1])
    return (w_rate, w_cpu), (p_rate, p_cpu)


async def child(mode: str, url: str, name: str, jobs: int, calls: int, filled: bool) -> None:
    aioqueue.logging.configure(level="warning")
    worker = await worker_rate(url, name, jobs, MODES[mode](), filled)
    producer = await producer_rate(url, f"{name}-p", calls, MODES[mode]())
    print(json.dumps([*worker, *producer]))


def main(jobs: int, reps: int, before: str, verbose: bool) -> None:
    server = RedisServer(port=free_port())
    server.start()
    names = list(MODES) + (["before"] if before else [])
    results: dict[str, dict[str, list[Figure]]] = {m: {"worker": [], "producer": []} for m in names}
    try:
        with checkout(before) as tree:
            for rep in range(reps):
                # each repetition starts with another mode: none always runs first or last
                for mode in names[rep % len(names) :] + names[: rep % len(names)]:
                    name = f"b-{mode}-{rep}"
                    worker, producer = child_figures(tree, mode, server.url, name, jobs)
                    results[mode]["worker"].append(worker)
                    results[mode]["producer"].append(producer)
                print(f"rep {rep + 1}/{reps} done (load average {os.getloadavg()[0]:.2f})",
                      flush=True)  # fmt: skip
    finally:
        server.cleanup()
    print(f"\n{jobs} jobs per worker run, {jobs // 4} enqueue calls per producer run, {reps} reps;")
    print("median rate (ratio to off), median CPU of this process per job (ratio to off)")
    off = {
        figure: [statistics.median(f[i] for f in results["off"][figure]) for i in (0, 1)]
        for figure in ("worker", "producer")
    }
    for mode in names:
        line = [f"{mode:>12}:"]
        for figure in ("worker", "producer"):
            rate = statistics.median(f[0] for f in results[mode][figure])
            cpu = statistics.median(f[1] for f in results[mode][figure])
            line.append(
                f"{figure} {rate:8,.0f}/s ({rate / off[figure][0]:.3f})"
                f" {cpu:5.1f} us ({cpu / off[figure][1]:.3f})"
            )
        if verbose:
            for figure in ("worker", "producer"):
                runs = ", ".join(f"{f[0]:,.0f}" for f in results[mode][figure])
                line.append(f"[{figure} runs: {runs}]")
        print("  ".join(line))
    if before:
        dark, then = (
            statistics.median(f[0] for f in results[m]["worker"]) for m in ("dark", "before")
        )
        print(f"everything off (dark) against {before} (before): worker {dark / then:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--before", default="64578fe", help="git revision to compare with ('': none)")
    ap.add_argument("--verbose", action="store_true", help="print every repetition's rates")
    ap.add_argument("--instructions", action="store_true", help="count instructions (callgrind)")
    ap.add_argument("--modes", default="dark,off,metrics+noop,bare,noop,before",
                    help="the modes --instructions counts")  # fmt: skip
    ap.add_argument("--small", type=int, default=300, help="--instructions: the small size")
    ap.add_argument("--large", type=int, default=1300, help="--instructions: the large size")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "URL", "QUEUE"), help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--filled", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        calls = args.jobs // 4 if args.calls is None else args.calls
        mode, url, name = args.child
        uvloop.run(child(mode, url, name, args.jobs, calls, args.filled))
    elif args.instructions:
        instructions(args.modes.split(","), args.before, args.small, args.large)
    else:
        main(args.jobs, args.reps, args.before, args.verbose)
