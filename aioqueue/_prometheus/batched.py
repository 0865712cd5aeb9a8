"""A worker's job metrics and a producer's enqueue metrics gathered in plain Python and
handed to prometheus_client in batches (``aioqueue.prometheus.PrometheusMiddleware``).

Per value touched, prometheus_client takes a lock and, in multiprocess mode, writes to
an mmapped file: about 8 such writes per job, 3 per enqueue (and a histogram's
observe walks its buckets in Python). Here a hook only appends to a list; a hand-over
(``flush``) turns what gathered into counts per series and adds them to the metric
objects. The first hook after a quiet spell hands over at the end of its event-loop
pass; while jobs keep coming, at most once every ``FLUSH_EVERY`` seconds, so the cost
of a hand-over is shared by every job of that spell instead of the two or three of one
pass. A SIGKILLed process loses what gathered since its last hand-over, at most that
long. A scrape of the process's own registry hands over first (``Flusher``), so it
reads every job counted so far.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["FLUSH_EVERY", "Batch", "Flusher", "Hist", "Pending", "Sent", "Series"]

FLUSH_EVERY = 0.02
"""Seconds between two hand-overs while jobs keep coming: what the counts may lag."""


class Hist:
    """What one histogram child gained since the last flush: bucket index -> count, sum
    (a hand-over adds to them)."""

    __slots__ = ("bounds", "child", "pending", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self.child, self.bounds = child, bounds
        self.pending: dict[int, int] = {}
        self.total = 0.0

    def add(self, value: float) -> None:
        bucket = bisect_left(self.bounds, value)
        self.pending[bucket] = self.pending.get(bucket, 0) + 1
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


class Batch:
    """What the hooks appended since the last hand-over, and that hand-over (``count``,
    a subclass's, turns the items taken into metric updates)."""

    def __init__(self) -> None:
        # appended without a lock: list.append is atomic, and flush removes only what
        # it read
        self.items: list[Any] = []
        self.scheduled = False
        # -inf, not 0.0: the monotonic clock starts near 0 at boot, and the first
        # hand-over is due at once
        self._last = float("-inf")
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
            self.count(taken)

    def count(self, taken: list[Any]) -> None:
        raise NotImplementedError


class Pending(Batch):
    """The attempts begun and ended since the last hand-over: ``(queue, task, None,
    wait)`` when one began (wait: seconds, or None when not known), ``(queue, task,
    outcome, duration)`` when it ended.

    Args:
        series_of: the series of a (queue, task).
        outcome_index: an outcome's place in ``Series.finished``; outcomes missing
            (an attempt released or lost) did not finish.
        busy: the busy-slots gauge, moved by what began minus what ended.
        known: the series made so far, by (queue, task): read first, written only by
            ``series_of`` (which keeps names the worker lacks out of it).
    """

    def __init__(
        self,
        series_of: SeriesOf,
        outcome_index: dict[str, int],
        busy: Any,
        known: dict[tuple[str, str], Series],
    ) -> None:
        super().__init__()
        self._series_of, self._outcome_index, self._busy = series_of, outcome_index, busy
        self._known = known

    def count(self, taken: list[Any]) -> None:
        # per item, this loop is all the counting a job costs: kept to dict and list
        # operations (Hist.add inlined), no Python call while the series is known
        series_of, outcome_index, known = self._series_of, self._outcome_index, self._known
        touched: set[Series] = set()
        busy = 0
        for queue, task, outcome, value in taken:
            series = known.get((queue, task))
            if series is None:  # a new series, or a name the worker lacks
                series = series_of(queue, task)
            touched.add(series)
            if outcome is None:
                busy += 1
                series.started += 1
                if value is None:
                    continue
                if value < 0.0:
                    value = 0.0
                hist = series.wait
            else:
                busy -= 1
                index = outcome_index.get(outcome)
                if index is None:
                    continue
                series.finished[index] += 1
                hist = series.duration
            bucket = bisect_left(hist.bounds, value)
            counts = hist.pending
            counts[bucket] = counts.get(bucket, 0) + 1
            hist.total += value
        for series in touched:
            series.flush()
        if busy:
            self._busy.inc(busy)


class Sent(Batch):
    """The enqueue calls ended since the last hand-over, as ``(queue, seconds, error,
    task)`` items: a call's duration (and the type name of its error, or None) in
    ``seconds``, a job stored in ``task``; the other field None. A call of one job is one
    item: strings and floats only, so that nothing of the call is held until the
    hand-over.

    Args:
        metrics: the families ``enqueued`` (queue, task), ``enqueue_errors`` (queue,
            error) and ``enqueue_duration`` (queue) of the registry.
        bounds: the duration histogram's bucket bounds.
    """

    def __init__(self, metrics: Any, bounds: tuple[float, ...]) -> None:
        super().__init__()
        self._m, self._bounds = metrics, bounds
        self._durations: dict[str, Hist] = {}
        self._enqueued: dict[tuple[str, str], Any] = {}

    def count(self, taken: list[Any]) -> None:
        m, known = self._m, self._durations
        touched: set[Hist] = set()
        jobs: dict[tuple[str, str], int] = {}
        errors: dict[tuple[str, str], int] = {}
        for queue, seconds, error, task in taken:
            if task is not None:
                key = (queue, task)
                jobs[key] = jobs.get(key, 0) + 1
            if seconds is None:
                continue
            hist = known.get(queue)
            if hist is None:
                hist = known[queue] = Hist(m.enqueue_duration.labels(queue), self._bounds)
            touched.add(hist)
            hist.add(seconds)
            if error is not None:
                key = (queue, error)
                errors[key] = errors.get(key, 0) + 1
        for hist in touched:
            hist.flush()
        for key, n in errors.items():
            m.enqueue_errors.labels(*key).inc(n)
        for key, n in jobs.items():
            counter = self._enqueued.get(key)
            if counter is None:
                counter = self._enqueued[key] = m.enqueued.labels(*key)
            counter.inc(n)


class Flusher:
    """A collector of no metrics, registered before the metrics of its registry: its
    ``collect`` (the first of each scrape) hands over every ``Batch`` of them."""

    def __init__(self) -> None:
        self._pending: weakref.WeakSet[Batch] = weakref.WeakSet()

    def add(self, pending: Batch) -> None:
        self._pending.add(pending)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        for pending in list(self._pending):
            pending.flush()
        return []
