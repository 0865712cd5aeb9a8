"""A worker's job metrics gathered in plain Python and handed to prometheus_client in
batches (``aioqueue.prometheus.PrometheusMiddleware``).

Per value touched, prometheus_client takes a lock and, in multiprocess mode, writes to
an mmapped file: about 8 such writes per job. Here a job's two hooks only append to a
list; a hand-over (``Pending.flush``) turns what gathered into counts per (queue, task)
series and adds them to the metric objects. The first hook after a quiet spell hands
over at the end of its event-loop pass; while jobs keep coming, at most once every
``FLUSH_EVERY`` seconds, so the cost of a hand-over is shared by every job of that
spell instead of the two or three of one pass. A SIGKILLed process loses what gathered
since its last hand-over, at most that long. A scrape of the process's own registry
hands over first (``Flusher``), so it reads every job counted so far.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["FLUSH_EVERY", "Flusher", "Hist", "Pending", "Series"]

FLUSH_EVERY = 0.02
"""Seconds between two hand-overs while jobs keep coming: what the counts may lag."""


class Hist:
    """What one histogram child gained since the last flush: bucket index -> count, sum."""

    __slots__ = ("bounds", "child", "pending", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self.child, self.bounds = child, bounds
        self.pending: dict[int, int] = {}
        self.total = 0.0

    def add(self, value: float) -> None:
        index = bisect_left(self.bounds, value)
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

    __slots__ = ("duration", "finished", "finished_children", "started", "started_child", "wait")

    def __init__(
        self,
        started: Any,
        finished: list[Any],
        duration: Any,
        wait: Any,
        bounds: tuple[float, ...],
    ) -> None:
        self.started_child, self.finished_children = started, finished
        self.started = 0
        self.finished = [0] * len(finished)
        self.duration, self.wait = Hist(duration, bounds), Hist(wait, bounds)

    def flush(self) -> None:
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


SeriesOf = Callable[[str, str], Series]


class Pending:
    """The attempts begun and ended since the last hand-over, and that hand-over.

    Args:
        series_of: the series of a (queue, task).
        outcome_index: an outcome's place in ``Series.finished``; outcomes missing
            (an attempt released or lost) did not finish.
        busy: the busy-slots gauge, moved by what began minus what ended.
    """

    def __init__(self, series_of: SeriesOf, outcome_index: dict[str, int], busy: Any) -> None:
        self._series_of, self._outcome_index, self._busy = series_of, outcome_index, busy
        # (attempt, None) when it began, (attempt, result) when it ended; appended
        # without a lock: list.append is atomic, and flush removes only what it read
        self.items: list[tuple[Any, Any]] = []
        self.scheduled = False
        self._last = 0.0
        # flush runs on any thread (a timer of the hooks' loop, a scrape's thread): the
        # hooks only append, and a flush takes only what it read, under this lock
        self._lock = threading.Lock()

    def schedule(self) -> None:
        """Called by a hook that appended while no hand-over was due."""
        self.scheduled = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here (a test calling hooks): hand over now
            self.flush()
            return
        wait = self._last + FLUSH_EVERY - time.monotonic()
        if wait > 0:
            loop.call_later(wait, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            # cleared first: a hook of another thread appending from here on schedules anew
            self.scheduled = False
            self._last = time.monotonic()
            items = self.items
            n = len(items)
            if not n:
                return
            taken = items[:n]
            del items[:n]
            series_of, outcome_index = self._series_of, self._outcome_index
            touched: dict[int, Series] = {}
            busy = 0
            for attempt, result in taken:
                series = series_of(attempt.queue, attempt.task)
                touched[id(series)] = series
                if result is None:
                    busy += 1
                    series.started += 1
                    wait = attempt.wait
                    if wait is not None:
                        series.wait.add(wait if wait > 0.0 else 0.0)
                    continue
                busy -= 1
                index = outcome_index.get(result.outcome)
                if index is not None:
                    series.finished[index] += 1
                    series.duration.add(result.duration)
            for series in touched.values():
                series.flush()
            if busy:
                self._busy.inc(busy)


class Flusher:
    """A collector of no metrics, registered before the metrics of its registry: its
    ``collect`` (the first of each scrape) hands over every ``Pending`` of them."""

    def __init__(self) -> None:
        self._pending: weakref.WeakSet[Pending] = weakref.WeakSet()

    def add(self, pending: Pending) -> None:
        self._pending.add(pending)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        for pending in list(self._pending):
            pending.flush()
        return []
