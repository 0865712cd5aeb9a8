"""What one call of a task becomes on the wire: its envelope, id, lock and signature.

The first step of the data path (``Queue.enqueue`` → here → the ``enqueue``
Function): everything a producer checks about a call before anything is sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aioqueue._protocol import signing
from aioqueue._protocol.envelope import ENVELOPE_VERSION, Envelope, encode_envelope
from aioqueue._protocol.functions import EnqueueWire
from aioqueue._protocol.keys import new_job_id
from aioqueue.errors import ConfigurationError, PayloadTooLarge
from aioqueue.serializers import Serializer
from aioqueue.task import Task

__all__ = ["encode_call"]


def encode_call(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    default_queue: str,
    serializer: Serializer,
    max_payload: int | None,
    signer: signing.Signer | None,
    job_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, EnqueueWire]:
    """(the queue it goes to, what the ``enqueue`` Function takes for it)."""
    if not isinstance(task, Task):
        raise ConfigurationError(f"expected a task or a task's name, got {task!r}")
    opts = task.defaults
    queue = opts.queue or default_queue
    data = serializer.dumps([list(args), kwargs])
    envelope = Envelope(
        ENVELOPE_VERSION,
        task.name,
        data,
        opts.timeout,
        opts.max_attempts,
        opts.result_ttl,
        headers,
    )
    delay = opts.delay.total_seconds() if isinstance(opts.delay, timedelta) else opts.delay
    delay_ms = int(delay * 1000) if delay else 0
    # `at` is an absolute instant, sent as such; `delay` is added to the Redis clock
    at_ms = int(opts.at.timestamp() * 1000) if opts.at is not None else 0
    payload = encode_envelope(envelope)
    if max_payload is not None and len(payload) > max_payload:
        raise PayloadTooLarge(
            f"job for {task.name} is {len(payload)} bytes; the limit is {max_payload}"
        )
    job_id = job_id or opts.job_id or new_job_id()
    lock = task.lock_wire(args, kwargs)
    if signer is not None:
        payload = signer.sign(payload, queue=queue, job_id=job_id, lock=lock)
    return queue, (job_id, payload, delay_ms, at_ms, lock)
