"""A private redis-server for development: ``aioqueue run --dev``.

When no Redis URL is configured and nothing answers on the default address,
the CLI starts ``redis-server`` as a child process listening only on a unix
socket under ``./.aioqueue/`` (no TCP port), with AOF on so that jobs survive
a restart of the dev loop, and stops it on exit. A dev Redis left running by a
run that was killed is found on its socket and reused.

Never for production: one Redis per developer checkout, no password.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

import structlog

from aioqueue.errors import ConfigurationError

__all__ = ["DevRedis", "answers"]

log = structlog.get_logger("aioqueue.devredis")

INSTALL_HINT = (
    "redis-server not found: install Redis "
    "('sudo apt-get install redis-server', 'brew install redis') or pass --redis-url"
)
SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS


def answers(url: str, timeout: float = 0.3) -> bool:
    """True when something at ``url`` (redis:// or unix://) answers PING."""
    parsed = urlparse(url)
    try:
        if parsed.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX)
            address: str | tuple[str, int] = parsed.path
        else:
            sock = socket.socket(socket.AF_INET)
            address = (parsed.hostname or "localhost", parsed.port or 6379)
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            # -NOAUTH means a Redis is there, it wants a password: not ours to use
            return reply.startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class DevRedis:
    """``with DevRedis() as url:`` a running private Redis, stopped at the end."""

    def __init__(self, directory: Path | str = ".aioqueue") -> None:
        self.dir = Path(directory).resolve()
        socket_path = self.dir / "redis.sock"
        if len(str(socket_path)) > SOCKET_PATH_MAX:  # too long for a unix socket address
            digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:12]  # noqa: S324 - a name
            socket_path = Path(tempfile.gettempdir()) / f"aioqueue-{digest}.sock"
        self.socket = socket_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        if answers(self.url):
            log.info("devredis.reused", url=self.url)
            return self.url
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigurationError(INSTALL_HINT)
        self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # left by a killed run; nothing answered on it
        args = [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        # own process group: a Ctrl-C must not stop Redis before the workers
        # have handed their jobs back
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, process_group=0
        )
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if self.process.poll() is not None:
                log_file = self.dir / "redis.log"
                tail = log_file.read_text()[-500:] if log_file.exists() else ""
                raise ConfigurationError(f"redis-server exited at start: {tail.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(f"redis-server did not start within {timeout}s")
            time.sleep(0.02)  # an external process to listen: there is no event to wait on
        log.info("devredis.started", url=self.url, pid=self.process.pid, dir=str(self.dir))
        return self.url

    def stop(self) -> None:
        """Stops the server if this object started it (SIGTERM: Redis flushes the AOF)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.info("devredis.stopped", pid=process.pid)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
