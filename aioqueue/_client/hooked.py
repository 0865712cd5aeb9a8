"""Enqueues with the producer's middleware around them (a ``Queue`` without
middleware never comes here: its hot path stays one encode and one Function call).

Job ids are made up before ``before_enqueue``, so a middleware sees, and can log
or trace, the id the job will have; headers added there go into the envelope.
Plain hooks are called as such (no coroutine per call): the common middleware,
counters and tracers, are plain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

from aioqueue._client.job import Job
from aioqueue._hooks import Hooks, start
from aioqueue._protocol.functions import EnqueueWire
from aioqueue._protocol.keys import new_job_id
from aioqueue.errors import ConfigurationError
from aioqueue.middleware import Enqueue, Message
from aioqueue.task import Task

__all__ = ["ProducerHooks"]

Call = tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any]]


class Sender(Protocol):
    """What of a ``Queue`` an enqueue needs (the Queue itself)."""

    name: str

    def _encode(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        job_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[str, EnqueueWire]: ...

    async def _send(
        self, queue: str, batch: list[EnqueueWire], fresh: bool = False
    ) -> list[str]: ...

    async def _send_one(self, queue: str, wire: EnqueueWire, fresh: bool) -> bool: ...

    async def _store(self, encoded: list[tuple[str, EnqueueWire]]) -> list[Job[Any]]: ...


class ProducerHooks:
    """A Queue's enqueue hooks, compiled once."""

    def __init__(self, hooks: Hooks) -> None:
        self.before, self.after = hooks.before_enqueue, hooks.after_enqueue

    async def enqueue(self, queue: Sender, task: Task[Any, Any], call: Call) -> Job[Any]:
        message = _message(task, queue.name)
        enqueue = Enqueue([message], False, time.perf_counter())
        if self.before and (rest := start(self.before, enqueue)) is not None:
            await rest
        try:
            _, args, kwargs = call
            name, wire = queue._encode(task, args, kwargs, message.job_id, _checked(message))
            created = await queue._send_one(name, wire, task.defaults.job_id is None)
        except BaseException as exc:
            await self._after(enqueue, exc)
            raise
        if self.after and (rest := start(self.after, enqueue, None)) is not None:
            await rest
        return Job(queue, name, wire[0], created)  # type: ignore[arg-type]

    async def enqueue_many(self, queue: Sender, calls: Sequence[Call]) -> list[Job[Any]]:
        messages = [_message(task, queue.name) for task, _, _ in calls]
        enqueue = Enqueue(messages, True, time.perf_counter())
        if self.before and (rest := start(self.before, enqueue)) is not None:
            await rest
        try:
            encoded = [
                queue._encode(task, args, kwargs, m.job_id, _checked(m))
                for (task, args, kwargs), m in zip(calls, messages, strict=True)
            ]
            jobs = await queue._store(encoded)
        except BaseException as exc:
            await self._after(enqueue, exc)
            raise
        if self.after and (rest := start(self.after, enqueue, None)) is not None:
            await rest
        return jobs

    async def _after(self, enqueue: Enqueue, error: BaseException) -> None:
        """The after hooks of a failed enqueue (not a hot path: one coroutine more)."""
        rest = start(self.after, enqueue, error)
        if rest is not None:
            await rest


def _message(task: Task[Any, Any], default_queue: str) -> Message:
    if not isinstance(task, Task):
        raise ConfigurationError(f"expected a task or a task's name, got {task!r}")
    opts = task.defaults
    delay = opts.delay
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    return Message(
        opts.queue or default_queue,
        task.name,
        opts.job_id or new_job_id(),
        {},
        float(delay or 0.0),
        opts.at,
    )


def _checked(message: Message) -> dict[str, str] | None:
    headers = message.headers
    if not headers:
        return None
    # a worker refuses an envelope whose headers are not strings: refused here instead
    for k, v in headers.items():
        if not (isinstance(k, str) and isinstance(v, str)):
            raise ConfigurationError(f"message headers must be strings, not {k!r}: {v!r}")
    return dict(headers)
