"""The web benchmark, one command: ``make bench-web`` (or ``make bench-web ARGS=--quick``).

A Starlette app under uvicorn (one process, asyncio's loop, httptools) whose ``GET /``
enqueues a no-op job and awaits its result (``web_app.py``), for aioqueue and
each peer in its own virtualenv, against one Redis, one worker process of the
library's own CLI at concurrency 100; ``wrk`` drives it at 100, 500 and 1,000
connections. Per library and connection count: requests/s, latency p50/p99,
errors (non-2xx answers and socket errors), and the app process's CPU per
request (the client's cost, since uvicorn serves little else). The app freezes its heap
once started (``gc.freeze()``, as docs/production.md advises; ``BENCH_GC_FREEZE=0`` does
not), for every library alike: a full collection otherwise pauses every request in
flight, which showed as p99.

    python benchmarks/web.py [--quick] [--libs aioqueue,saq] [--conns 100,500,1000]
                             [--duration 10] [--reps 1]

Results: ``results/web-<run>.jsonl`` and ``results/web-<run>.md`` (and
``results/web-latest.md``). Needs ``wrk`` (``apt-get install wrk``; the make
target installs it when run as root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import LIBS, RESULTS, VENVS, Redis, free_port, machine  # noqa: E402

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _nofile() -> None:
    """1,000 connections on each side need more than the default 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, 65536)), hard))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_wrk(out: str, seconds: float) -> dict[str, Any]:
    def ms(text: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s|m)", text)
        return float(m[1]) * UNITS[m[2]] if m else float("nan")

    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    total = int(m[1]) if (m := re.search(r"(\d+) requests in", out)) else 0
    non2xx = int(m[1]) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in sock.groups()) if sock else 0
    return {
        "requests": total,
        "ok_per_s": (total - non2xx) / seconds,
        "p50_ms": ms(lat.get("50", "")),
        "p99_ms": ms(lat.get("99", "")),
        "errors": non2xx + socket_errors,
        "non2xx": non2xx,
        "socket_errors": socket_errors,
    }


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Bench:
    def __init__(self, args: argparse.Namespace, redis: Redis, out: Any, logdir: Path) -> None:
        self.args = args
        self.redis = redis
        self.out = out
        self.logdir = logdir

    def spawn(self, cmd: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "w")  # noqa: SIM115
        return subprocess.Popen(
            cmd, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_nofile,
        )  # fmt: skip

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.redis.port)) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)

    def run_lib(self, lib: str, rep: int) -> None:
        python = str(VENVS[lib] / "bin" / "python")
        env = {
            **os.environ,
            "BENCH_REDIS_URL": self.redis.url,
            "BENCH_LIB": lib,
            "BENCH_CONCURRENCY": "100",
            # one pooled connection per awaited result: see apps/streaq_app.py
            "BENCH_STREAQ_POOL": str(2 * max(self.args.conns) + 64),
            "PYTHONPATH": str(HERE),
            "PYTHONUNBUFFERED": "1",
        }
        self.flush()
        code = "import sys, json; sys.path.insert(0, '.'); import importlib;"
        code += f"a = importlib.import_module('apps.{lib}_app').Adapter({self.redis.url!r});"
        code += "print(json.dumps([a.worker_cmds(1, 100), a.version]))"
        meta = subprocess.run([python, "-c", code], cwd=HERE, env=env, capture_output=True)
        worker_cmds, version = json.loads(meta.stdout.decode().strip().splitlines()[-1])
        workers = [self.spawn(c, env, f"{lib}-worker-{rep}-{n}") for n, c in enumerate(worker_cmds)]
        port = free_port()
        app = self.spawn(
            [python, "-m", "uvicorn", "web_app:app", "--host", "127.0.0.1", "--port", str(port),
             "--loop", self.args.app_loop, "--http", "httptools", "--log-level", "warning",
             "--no-access-log", "--backlog", "4096"],
            env, f"{lib}-app-{rep}",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while not answers(port):
                if time.monotonic() > deadline or app.poll() is not None:
                    print(f"   {lib}: the app did not answer", flush=True)
                    return
                time.sleep(0.2)  # another process starting up: nothing to wait on
            for conns in self.args.conns:
                self.wrk(port, conns, self.args.warmup)  # warm: connections, JIT-less caches
                before = cpu_seconds(app.pid)
                out = self.wrk(port, conns, self.args.duration)
                cpu = cpu_seconds(app.pid) - before
                rec = parse_wrk(out, self.args.duration)
                rec.update(
                    lib=lib, version=version, rep=rep, conns=conns,
                    duration_s=self.args.duration,
                    app_cpu_ms_per_request=cpu * 1000 / max(1, rec["requests"]),
                    loadavg=os.getloadavg(),
                )  # fmt: skip
                self.out.write(json.dumps(rec) + "\n")
                self.out.flush()
                print(
                    f"   {lib} c={conns}: {rec['ok_per_s']:,.0f} req/s, p50 {rec['p50_ms']:.1f}"
                    f" ms, p99 {rec['p99_ms']:.1f} ms, errors {rec['errors']},"
                    f" app CPU {rec['app_cpu_ms_per_request']:.3f} ms/req",
                    flush=True,
                )
        finally:
            self.stop(app)
            for w in workers:
                self.stop(w)

    def wrk(self, port: int, conns: int, seconds: float) -> str:
        cmd = ["wrk", "-t2", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
        cmd += ["--timeout", "10s"]
        proc = subprocess.run(
            [*cmd, f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
            preexec_fn=_nofile, timeout=seconds + 60,
        )  # fmt: skip
        if "requests in" not in proc.stdout:
            print(f"   wrk failed: {proc.stdout}{proc.stderr}", flush=True)
        return proc.stdout


def render(path: Path) -> str:
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    header = next(r for r in recs if r.get("kind") == "header")
    data = [r for r in recs if "lib" in r]
    libs = [lib for lib in LIBS if any(r["lib"] == lib for r in data)]
    versions = {r["lib"]: r["version"] for r in data}
    m = header["machine"]
    lines = [
        f"## Web benchmark {header['run']} ({header['duration']} s per point, "
        f"{header['reps']} rep.)",
        "",
        f"Starlette under uvicorn (1 process, {header.get('app_loop', 'uvloop')} loop, httptools),"
        " `GET /` = enqueue a no-op job"
        f" + await its result on one shared client; 1 worker process (concurrency 100); wrk -t2;"
        f" Redis {header['redis']} on loopback. Shared machine ({m['cpus']} cores, {m['cpu']};"
        f" load average {_load(m['loadavg'])} at start): indicative only. Medians over"
        " repetitions. Versions: " + ", ".join(f"{lib} {versions[lib]}" for lib in libs) + ".",
        "",
        "| connections | library | requests/s (ok) | p50 ms | p99 ms | p99/p50 | errors"
        " | app CPU ms/req | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for conns in sorted({r["conns"] for r in data}):
        best_peer = 0.0
        for lib in libs:
            rs = [r for r in data if r["lib"] == lib and r["conns"] == conns]
            if not rs:
                continue
            ok = statistics.median(r["ok_per_s"] for r in rs)
            p50 = statistics.median(r["p50_ms"] for r in rs)
            p99 = statistics.median(r["p99_ms"] for r in rs)
            cpu = statistics.median(r["app_cpu_ms_per_request"] for r in rs)
            errors = sum(r["errors"] for r in rs)
            load = statistics.median(r["loadavg"][0] for r in rs)
            if lib != "aioqueue":
                best_peer = max(best_peer, ok)
            if not any(r["requests"] for r in rs):
                lines.append(
                    f"| {conns} | {lib} | 0 | - | - | - | no request completed in the run"
                    f" | - | {load:.1f} |"
                )
                continue
            lines.append(
                f"| {conns} | {lib} | {ok:,.0f} | {p50:.1f} | {p99:.1f} | {p99 / p50:.1f}"
                f" | {errors} | {cpu:.3f} | {load:.1f} |"
            )
        aq = [r["ok_per_s"] for r in data if r["lib"] == "aioqueue" and r["conns"] == conns]
        if aq and best_peer:
            lines.append(
                f"| {conns} | aioqueue / best peer | {statistics.median(aq) / best_peer:.1f}x"
                " | | | | | | |"
            )
    return "\n".join(lines) + "\n"


def _load(v: object) -> str:
    return "/".join(f"{x:.1f}" for x in v) if isinstance(v, list | tuple) else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s per point, 100 and 1,000 only")
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--conns", default=None, help="connection counts (default 100,500,1000)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=1)
    # uvloop accepts one connection per pass of its loop: with the app's loop busy,
    # part of wrk's 1,000 new connections waited the whole run for their first
    # answer (a plain Starlette handler burning 150 us: p99 6.1 s on uvloop, 0.38 s
    # on asyncio). The app runs on asyncio so that p99 measures the libraries.
    ap.add_argument("--app-loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    conns = args.conns or ("100,1000" if args.quick else "100,500,1000")
    args.conns = [int(c) for c in conns.split(",")]
    args.duration = args.duration or (5.0 if args.quick else 10.0)
    libs = [lib for lib in args.libs.split(",") if lib]
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: `apt-get install wrk` (make bench-web installs it as root)")
    for lib in libs:
        if not (VENVS[lib] / "bin" / "python").exists():
            sys.exit(f"{VENVS[lib]} is missing: run `make bench-venvs`")
    RESULTS.mkdir(exist_ok=True)
    run_id = "web-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{run_id}.jsonl"
    logdir = Path(f"/tmp/bench-{run_id}")
    logdir.mkdir(parents=True, exist_ok=True)
    _nofile()
    redis = Redis()
    header = {
        "kind": "header", "run": run_id, "redis": redis.version, "machine": machine(),
        "duration": args.duration, "reps": args.reps, "conns": args.conns, "logs": str(logdir),
        "app_loop": args.app_loop,
    }  # fmt: skip
    print(f"run {run_id}: redis {redis.version} on port {redis.port}, logs in {logdir}")
    try:
        with path.open("w") as out:
            out.write(json.dumps(header) + "\n")
            bench = Bench(args, redis, out, logdir)
            for rep in range(args.reps):
                order = libs[rep % len(libs) :] + libs[: rep % len(libs)]
                for lib in order:
                    print(f"-- rep {rep + 1}/{args.reps}: {lib}", flush=True)
                    bench.run_lib(lib, rep)
    finally:
        redis.stop()
    md = render(path)
    (RESULTS / f"{run_id}.md").write_text(md)
    (RESULTS / "web-latest.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
