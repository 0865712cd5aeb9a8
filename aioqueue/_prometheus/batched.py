"""A worker's job metrics counted in plain Python, handed to prometheus_client once per
event-loop pass (``aioqueue.prometheus.PrometheusMiddleware``).

Per job, prometheus_client costs a lock and, in multiprocess mode, a write to the
mmapped file for every value touched: about 8 writes and several microseconds per
no-op job. Here a job's hooks add to ints and bucket lists, and the first hook of a
loop pass schedules one flush (``call_soon``) that adds what changed to the metric
objects. Nothing is kept back longer than that pass: a job's start is in the files
before its task gets past its first await, so a SIGKILLed process loses only the
counts of the pass it died in, as it would lose an outcome not yet written.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ["Batcher", "Hist", "Series"]


class Hist:
    """What one histogram child gained since the last flush: bucket index -> count, sum."""

    __slots__ = ("child", "pending", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending: dict[int, int] = {}
        self.total = 0.0

    def add(self, index: int, value: float) -> None:
        pending = self.pending
        pending[index] = pending.get(index, 0) + 1
        self.total += value

    def flush(self) -> None:
        if self.pending:
            buckets = self.child._buckets  # prometheus_client's per-bucket values, +Inf last
            for index, n in self.pending.items():
                buckets[index].inc(n)
            self.pending.clear()
            self.child._sum.inc(self.total)
            self.total = 0.0


class Series:
    """What one (queue, task) gained since the last flush: starts, outcomes, histograms."""

    __slots__ = (
        "dirty",
        "duration",
        "finished",
        "finished_children",
        "started",
        "started_child",
        "wait",
    )

    def __init__(self, started: Any, finished: list[Any], duration: Any, wait: Any) -> None:
        self.started_child, self.finished_children = started, finished
        self.started = 0
        self.finished = [0] * len(finished)
        self.duration, self.wait = Hist(duration), Hist(wait)
        self.dirty = False

    def flush(self) -> None:
        self.dirty = False
        if self.started:
            self.started_child.inc(self.started)
            self.started = 0
        finished = self.finished
        for index, n in enumerate(finished):
            if n:
                self.finished_children[index].inc(n)
                finished[index] = 0
        self.duration.flush()
        self.wait.flush()


class Batcher:
    """The series touched since the last flush, and the busy slots (one per registry)."""

    def __init__(self, busy: Any) -> None:
        self.busy = 0  # jobs between their before_attempt and after_attempt
        self.scheduled = False
        self._busy_gauge, self._sent_busy = busy, 0
        self._dirty: list[Series] = []
        self._lock = threading.Lock()  # event loops of two threads may share a registry

    def touch(self, series: Series) -> None:
        """Called by a hook that changed ``series`` (and ``busy``)."""
        if not series.dirty:
            series.dirty = True
            self._dirty.append(series)
        if not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop here (a test calling hooks): hand over now
                self.flush()

    def flush(self) -> None:
        with self._lock:
            self.scheduled = False
            dirty, self._dirty = self._dirty, []
            for series in dirty:
                series.flush()
            if self.busy != self._sent_busy:
                self._busy_gauge.set(self.busy)
                self._sent_busy = self.busy
