"""The two apps of docs/migrating/arq.md run: the aioqueue one against a real Redis with a
real worker process, the arq one likewise under arq (its own venv: arq needs redis-py < 6;
`make test` builds .venv-arq, else benchmarks' arq venv is used when present)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
ARQ_PYTHONS = [
    ROOT / ".venv-arq" / "bin" / "python",
    ROOT / "benchmarks" / ".venv-a" / "bin" / "python",
]


def _run_beside(worker: list[str], producer: list[str], env: dict[str, str]) -> str:
    """Starts the worker, runs the producer to its end, stops the worker; the producer's output."""
    proc = subprocess.Popen(
        worker, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        out = subprocess.run(
            producer, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr + err.decode()
    return out.stdout


def test_the_aioqueue_version_runs(redis_url: str) -> None:
    env = {**os.environ, "AIOQUEUE_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    worker = [
        sys.executable,
        "-m",
        "aioqueue",
        "run",
        "examples.migrate_arq.aioqueue_app:worker",
        "--processes",
        "0",
    ]
    out = _run_beside(worker, [sys.executable, "-m", "examples.migrate_arq.aioqueue_app"], env)
    assert out.strip() == "welcome 42"


def test_the_arq_version_runs() -> None:
    python = next((p for p in ARQ_PYTHONS if p.exists()), None)
    if python is None:
        pytest.skip("no virtualenv with arq: `make .venv-arq/.installed` builds one")
    server = RedisServer(port=free_port())  # arq's RedisSettings speaks TCP
    server.start()
    try:
        env = {**os.environ, "REDIS_URL": server.tcp_url, "PYTHONPATH": str(ROOT)}
        worker = [str(python), "-m", "arq", "examples.migrate_arq.arq_app.WorkerSettings"]
        out = _run_beside(worker, [str(python), "-m", "examples.migrate_arq.arq_app"], env)
    finally:
        server.cleanup()
    assert out.strip() == "welcome 42"
