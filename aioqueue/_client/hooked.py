"""An enqueue with the producer's middleware around it (``Queue`` without middleware
never comes here: its hot path stays one encode and one Function call).

Job ids are made up before ``before_enqueue``, so a middleware sees, and can log
or trace, the id the job will have; headers added there go into the envelope.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from aioqueue._client.job import Job
from aioqueue._hooks import Hooks, fire
from aioqueue.errors import ConfigurationError
from aioqueue.middleware import Enqueue, Message
from aioqueue.task import Task

__all__ = ["Planned", "hooked_enqueue"]

# a call to make: its task, args, kwargs, the job id and the headers to send
Planned = tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any], str, dict[str, str] | None]


async def hooked_enqueue(
    hooks: Hooks,
    calls: Sequence[tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any]]],
    *,
    many: bool,
    default_queue: str,
    new_id: Callable[[], str],
    send: Callable[[list[Planned]], Awaitable[list[Job[Any]]]],
) -> list[Job[Any]]:
    messages = []
    for task, _, _ in calls:
        if not isinstance(task, Task):
            raise ConfigurationError(f"expected a task or a task's name, got {task!r}")
        opts = task.defaults
        delay = opts.delay.total_seconds() if isinstance(opts.delay, timedelta) else opts.delay
        messages.append(
            Message(
                opts.queue or default_queue,
                task.name,
                opts.job_id or new_id(),
                {},
                float(delay or 0.0),
                opts.at,
            )
        )
    enqueue = Enqueue(messages, many, time.perf_counter())
    await fire(hooks.before_enqueue, enqueue)
    try:
        jobs = await send(
            [
                (task, args, kwargs, m.job_id, _checked(m.headers))
                for (task, args, kwargs), m in zip(calls, messages, strict=True)
            ]
        )
    except BaseException as exc:
        await fire(hooks.after_enqueue, enqueue, exc)
        raise
    await fire(hooks.after_enqueue, enqueue, None)
    return jobs


def _checked(headers: dict[str, str]) -> dict[str, str] | None:
    # a worker refuses an envelope whose headers are not strings: refused here instead
    for k, v in headers.items():
        if not (isinstance(k, str) and isinstance(v, str)):
            raise ConfigurationError(f"message headers must be strings, not {k!r}: {v!r}")
    return dict(headers) if headers else None
