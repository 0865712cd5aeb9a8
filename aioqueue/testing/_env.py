"""One test's view of the private Redis: a fresh database, the clock's reading,
the workers running in the test, and the task exceptions they recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.asyncio import Redis

from aioqueue._protocol.functions import TESTING_LIBRARY
from aioqueue._protocol.keys import queue_prefix
from aioqueue._worker.worker import Worker
from aioqueue.errors import ConfigurationError
from aioqueue.testing._build import CLOCK_KEY, TEST_LIBRARY
from aioqueue.testing._cron import CronGate

__all__ = ["Environment", "LiveWorker", "current", "install_library"]


class LiveWorker(Protocol):
    """What the environment and the test clock use of a ``RunningWorker`` (_worker.py,
    which builds on this module: it is not imported here)."""

    @property
    def worker(self) -> Worker: ...

    @property
    def _cron_gates(self) -> list[CronGate]: ...


def install_library(client: redis.Redis) -> None:
    """Makes the private Redis run aioqueue.testing's build (and only it)."""
    for lib in client.function_list(library="aioqueue_*"):
        name = _library_name(lib)
        if name != TESTING_LIBRARY:
            client.function_delete(name)
    client.function_load(TEST_LIBRARY, replace=True)


def _library_name(entry: Any) -> str:
    # RESP2: a flat [b'library_name', b'name', ...] list per library; RESP3: a dict
    if isinstance(entry, dict):
        raw = entry.get(b"library_name", entry.get("library_name"))
    else:
        raw = entry[entry.index(b"library_name") + 1]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass
class Environment:
    url: str
    workers: list[LiveWorker] = field(default_factory=list)
    # the exception each attempt raised, by (queue, job id): the last one wins
    failures: dict[tuple[str, str], BaseException] = field(default_factory=dict)
    # dead-lettered jobs already raised by fail_fast, or there before the test's workers
    reported: dict[str, set[str]] = field(default_factory=dict)
    # reads the clock for TestClock.ms, which is not async (a task may read it too)
    reader: redis.Redis | None = field(default=None, repr=False)

    @classmethod
    def prepare(cls, url: str) -> Environment:
        """An empty database on the test clock, which reads the wall clock's now."""
        client = redis.Redis.from_url(url)
        try:
            if not client.function_list(library=TESTING_LIBRARY):
                install_library(client)
            client.flushdb()
            client.set(CLOCK_KEY, int(time.time() * 1000) * 1000)
        except BaseException:
            client.close()
            raise
        return cls(url, reader=client)

    @property
    def now_ms(self) -> int:
        """The test clock (Unix ms), read from Redis: during an advance it moves
        inside Redis, step by step, while the test waits."""
        if self.reader is None:
            self.reader = redis.Redis.from_url(self.url)
        raw: Any = self.reader.get(CLOCK_KEY)
        return int(raw) // 1000

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def connect(self) -> Redis:
        # as the library's own clients (aioqueue._redis.connect): no socket timeout,
        # since drive's BLPOP waits up to its own timeout, and redis-py's default of
        # 5 s cut that wait short on a busy machine, losing the connection mid-wait
        return Redis.from_url(self.url, socket_timeout=None)

    def prefixes(self) -> list[str]:
        """Key prefixes of the queues the live workers serve, each once."""
        seen: dict[str, None] = {}
        for running in self.workers:
            for queue in running.worker.queues:
                seen[queue_prefix(queue)] = None
        return list(seen)

    def worker_ids(self) -> list[str]:
        return [running.worker.id for running in self.workers]

    def cron_gates(self) -> list[CronGate]:
        return [gate for running in self.workers for gate in running._cron_gates]


_current: Environment | None = None


def current() -> Environment:
    if _current is None:
        raise ConfigurationError(
            "aioqueue.testing needs its private Redis: use the aioqueue_redis_url fixture"
            " (or aioqueue_queue / aioqueue_clock, which use it) in this test, with the"
            " plugin enabled (pytest_plugins = ['aioqueue.testing'])"
        )
    return _current


def set_current(env: Environment | None) -> None:
    global _current
    _current = env
