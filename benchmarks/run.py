"""aioqueue vs its peers, one command: ``make bench`` (or ``make bench ARGS=--quick``).

Starts its own redis-server (loopback port, no persistence), then for each
repetition runs ``driver.py`` once per library, each in that library's own
virtualenv (``benchmarks/.venv-*``), all against the same Redis. Results go to
``benchmarks/results/<run>.jsonl`` (one JSON object per figure) and a markdown
table ``<run>.md`` (also copied to ``latest.md``), built by ``report.py``.

    python benchmarks/run.py [--quick] [--reps N] [--libs aioqueue,arq] [--scenarios noop,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
VENVS = {
    "aioqueue": HERE / ".venv-aq",
    "arq": HERE / ".venv-a",
    "saq": HERE / ".venv-a",
    "streaq": HERE / ".venv-a",
    "taskiq": HERE / ".venv-t",
}
LIBS = list(VENVS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """Our own redis-server: loopback only, no RDB, no AOF; stopped by its pid."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server not found (`make redis-server` installs it)")
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        version = subprocess.run(
                            [binary, "--version"], capture_output=True, text=True
                        ).stdout
                        self.version = version.split()[2].removeprefix("v=")
                        return
            except OSError:
                time.sleep(0.05)  # waiting for another process to listen
        sys.exit("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, 1 repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--scenarios", default=None, help="driver scenarios (default: all)")
    ap.add_argument("--note", default="", help="free text stored with the run")
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    libs = [lib for lib in args.libs.split(",") if lib]
    for lib in libs:
        if not (VENVS[lib] / "bin" / "python").exists():
            sys.exit(f"{VENVS[lib]} is missing: run `make bench` (it creates the venvs)")

    RESULTS.mkdir(exist_ok=True)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    out = RESULTS / f"{run_id}.jsonl"
    logdir = Path(tempfile.mkdtemp(prefix=f"bench-{run_id}-"))
    redis = Redis()
    header = {
        "run": run_id,
        "kind": "header",
        "quick": args.quick,
        "reps": reps,
        "redis": redis.version,
        "machine": machine(),
        "note": args.note or "shared 2-core machine: indicative numbers",
        "worker_logs": str(logdir),
    }
    print(f"run {run_id}: redis {redis.version} on port {redis.port}, logs in {logdir}")
    t_start = time.monotonic()
    try:
        with out.open("w") as f:
            f.write(json.dumps(header) + "\n")
            for rep in range(reps):
                # rotate the order so no library always runs first (or last) in a repetition
                order = libs[rep % len(libs) :] + libs[: rep % len(libs)]
                for lib in order:
                    # the backlog build is long: once per run, measured in several windows
                    scenarios = args.scenarios or (
                        "enqueue,concurrent,bulk,sleep,latency,cpu"
                        + (",backlog" if rep == 0 else "")
                    )
                    cmd = [str(VENVS[lib] / "bin" / "python"), str(HERE / "driver.py")]
                    cmd += ["--lib", lib, "--url", redis.url, "--rep", str(rep)]
                    cmd += ["--scenarios", scenarios, "--logdir", str(logdir)]
                    if args.quick:
                        cmd.append("--quick")
                    print(f"-- rep {rep + 1}/{reps}: {lib}", flush=True)
                    proc = subprocess.run(cmd, cwd=HERE, stdout=subprocess.PIPE, text=True)
                    for line in proc.stdout.splitlines():
                        if line.startswith("{"):
                            rec = json.loads(line)
                            rec["run"] = run_id
                            f.write(json.dumps(rec) + "\n")
                            f.flush()
                    if proc.returncode:
                        print(f"   driver for {lib} exited {proc.returncode}", flush=True)
            f.write(
                json.dumps(
                    {
                        "run": run_id,
                        "kind": "footer",
                        "loadavg": os.getloadavg(),
                        "seconds": round(time.monotonic() - t_start),
                    }
                )
                + "\n"
            )
    finally:
        redis.stop()
    from report import render

    md = render(out)
    (RESULTS / f"{run_id}.md").write_text(md)
    (RESULTS / "latest.md").write_text(md)
    print(md)
    print(f"results: {out}\ntable:   {RESULTS / f'{run_id}.md'}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
