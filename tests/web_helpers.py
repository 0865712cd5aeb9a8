"""What the dashboard's tests share: entries of a queue's event stream written as
the workers write them (issue #14's contract), for tests that need an event
without a worker to make it."""

from __future__ import annotations

from typing import Any

from aioqueue.admin_pages import events_key

__all__ = ["emit", "events_key"]


async def emit(redis: Any, queue: str, event: str, job: str, task: str, attempt: int = 0) -> str:
    """XADDs one event the way the Functions do (MAXLEN ~, Redis time)."""
    seconds, micros = await redis.time()
    ts = int(seconds) * 1000 + int(micros) // 1000
    fields = {"event": event, "job": job, "task": task, "attempt": attempt, "ts": ts}
    stream_id = await redis.xadd(events_key(queue), fields, maxlen=10_000, approximate=True)
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
