"""A private redis-server for tests: a unix socket in a temp dir, no persistence,
started and stopped by pid, gone with the test process if that is killed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["BINARY_ENV", "PrivateRedis", "RedisServerMissing", "die_with_parent", "listening"]

BINARY_ENV = "AIOQUEUE_REDIS_SERVER"

try:
    import ctypes

    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before any fork
except OSError:
    _LIBC = None


class RedisServerMissing(RuntimeError):
    """No redis-server binary to start."""


def die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the test process
    dies, so a test run killed by a timeout leaves no redis-server behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def listening(socket_path: str) -> bool:
    """True once a Redis answers on the unix socket (PONG, or NOAUTH when it wants a password)."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1.0)
            s.connect(socket_path)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def find_binary() -> str:
    binary = os.environ.get(BINARY_ENV) or shutil.which("redis-server")
    if not binary:
        raise RedisServerMissing(
            "aioqueue.testing: redis-server not found on PATH; install Redis"
            " (apt-get install redis-server, brew install redis)"
            f" or set {BINARY_ENV}=/path/to/redis-server"
        )
    return binary


class PrivateRedis:
    """One redis-server of this test session, reachable only through its unix socket."""

    def __init__(self) -> None:
        self.binary = find_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="aioqueue-testing-"))
        self.socket = str(self.dir / "redis.sock")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--port",
            "0",
            "--unixsocket",
            self.socket,
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + timeout
        while not listening(self.socket):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start within {timeout}s")
            time.sleep(0.01)  # an external process to listen: there is no event to wait on

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
