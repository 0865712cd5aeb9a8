"""``aioqueue run --metrics-port``: ``/metrics`` served by the supervisor (or by the one
worker process of ``--processes 0``), on a thread of its own beside the select loop.

Supervised, the children count into files of a private directory (prometheus_client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` in their environment, read before
their first import of it) and this process sums them per scrape. A child that dies
keeps its files, so its counters and histograms stay in the sums (a restart never
resets them); its live-only gauges (busy slots, capacity) go with it
(``child_exited``). The queue gauges are read from Redis here, once per scrape.
The directory is made at start and removed at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog

from aioqueue._redis.errors import redact
from aioqueue.errors import ConfigurationError

__all__ = ["METRICS_DIR_ENV", "MetricsServer"]

METRICS_DIR_ENV = "AIOQUEUE_METRICS_DIR"  # set in a child: count into this directory

log = structlog.get_logger("aioqueue.metrics")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


class _Local:
    """This process's own registry (prometheus_client's default) as one collector."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        return self.registry.collect()  # type: ignore[no-any-return]


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` (port 0: any free one, logged) until ``close``."""

    def __init__(
        self, host: str, port: int, redis_url: str, queues: Sequence[str], *, supervised: bool
    ) -> None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "--metrics-port needs prometheus-client: pip install 'aioqueue[prometheus]'"
            ) from None
        self.host, self.port = host, port
        self.redis_url = redis_url
        self.queues = list(queues)
        self.supervised = supervised
        self.directory: str | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._collector: Any = None

    def start(self) -> dict[str, str]:
        """Starts serving; returns what a supervised child needs in its environment."""
        from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer
        from prometheus_client.multiprocess import MultiProcessCollector

        from aioqueue.prometheus import QueueCollector

        registry = CollectorRegistry()
        env = {}
        if self.supervised:
            self.directory = tempfile.mkdtemp(prefix="aioqueue-metrics-")
            MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
            env = {"PROMETHEUS_MULTIPROC_DIR": self.directory, METRICS_DIR_ENV: self.directory}
        else:
            registry.register(_Local(REGISTRY))
        self._collector = QueueCollector(self.redis_url, self.queues)
        registry.register(self._collector)
        try:
            self._server = make_server(
                self.host,
                self.port,
                make_wsgi_app(registry),
                ThreadingWSGIServer,
                handler_class=_Quiet,
            )
        except OSError as exc:
            self.close()
            raise ConfigurationError(
                f"--metrics-port: cannot listen on {self.host}:{self.port}: {exc}"
            ) from None
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="aioqueue-metrics-http", daemon=True
        )
        self._thread.start()
        log.info(
            "metrics.serving",
            host=self.host,
            port=self.port,
            redis=redact(self.redis_url),
            queues=self.queues,
            dir=self.directory,
        )
        return env

    def child_exited(self, pid: int) -> None:
        """Drops a dead child's live-only gauges; its counters stay in the sums."""
        if self.directory is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._collector is not None:
            self._collector.close()
            self._collector = None
        if self.directory is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.directory)
            self.directory = None
