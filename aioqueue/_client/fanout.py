"""An ``enqueue_many`` whose jobs go to several queues: one call per queue, sent together.

Each queue lives in its own cluster slot, so each is its own Function call. A
queue that fails does not cancel the others (their jobs would end up unknown):
the caller learns which were stored and which were not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from aioqueue._protocol.functions import EnqueueWire
from aioqueue.errors import AioqueueError

__all__ = ["send_per_queue"]


async def send_per_queue(
    send: Callable[[str, list[EnqueueWire]], Awaitable[list[str]]],
    by_queue: dict[str, list[EnqueueWire]],
) -> tuple[dict[str, list[str]], dict[str, AioqueueError]]:
    """Statuses of the queues that took their jobs, and errors of those that did not."""
    results: dict[str, list[str]] = {}
    errors: dict[str, AioqueueError] = {}

    async def one(queue: str, batch: list[EnqueueWire]) -> None:
        try:
            results[queue] = await send(queue, batch)
        except AioqueueError as exc:
            errors[queue] = exc

    async with anyio.create_task_group() as tg:
        for queue, batch in by_queue.items():
            tg.start_soon(one, queue, batch)
    return results, errors
