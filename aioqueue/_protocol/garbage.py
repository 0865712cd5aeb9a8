"""The garbage area of a queue: what the Functions set aside, and why.

Nothing found in a queue's keys that aioqueue did not write is deleted, and
nothing there can make a Function fail half way: a key of the wrong type, a job
whose fields do not parse, an entry of the ready list (or the scheduled,
active or dead sets) that names no job, a job whose payload cannot be read or
whose signature does not match. Each is moved (a key, whole) or copied (an
entry, as a string) to ``aq:{<queue>}:garbage:<what>:<ms>``, and:

- ``aq:{<queue>}:garbage`` (sorted set) lists those keys by the Redis time (ms);
- ``aq:{<queue>}:garbage:why`` (hash) holds each one's reason;
- ``aq:{<queue>}:garbage:new`` (list) holds a line per set-aside for the next
  ``claim`` of any worker, which logs it (``queue.set_aside``), so every
  set-aside is logged once, by whichever Function (or producer) made it.

The stats counter ``quarantined`` counts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import ResponseError

from aioqueue._protocol.keys import QueueKeys

__all__ = ["SetAside", "abort_target", "log_set_aside", "printable", "read_garbage"]

log = structlog.get_logger("aioqueue.worker")


def printable(raw: bytes) -> str:
    """Bytes from Redis as text that is safe in a log line or a terminal."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _split(line: bytes) -> tuple[str, str]:
    key, sep, reason = line.rpartition(b"\0")
    if not sep:  # not a line a Function wrote: log it whole
        return printable(line), "unreadable set-aside line"
    return printable(key), printable(reason)


def abort_target(channels: dict[str, str], channel: object, data: object) -> tuple[str, str] | None:
    """(queue, job id) named by a message on an abort channel; None, logged, for one that
    names no job: anyone who can publish can send bytes there."""
    raw = data if isinstance(data, bytes) else repr(data).encode()
    queue = channels.get(channel.decode("utf-8", "replace")) if isinstance(channel, bytes) else None
    try:
        job_id = raw.decode()
    except UnicodeDecodeError:
        queue = None
    if queue is None:
        log.warning("worker.abort_ignored", reason="not a job id", data=printable(raw[:200]))
        return None
    return queue, job_id


def log_set_aside(queue: str, lines: Iterable[bytes]) -> None:
    for line in lines:
        key, reason = _split(line)
        log.warning("queue.set_aside", queue=queue, key=key, reason=reason)


@dataclass(frozen=True, slots=True)
class SetAside:
    """One thing in the garbage area: the key holding it, why, and when (Redis ms)."""

    key: bytes
    reason: str
    at_ms: int


async def read_garbage(redis: Any, queue: str, limit: int = 1000) -> list[SetAside]:
    """The oldest ``limit`` set-asides of ``queue`` (``redis``: any redis-py client)."""
    keys = QueueKeys(queue)
    try:
        entries: list[Any] = await redis.zrange(keys.garbage, 0, limit - 1, withscores=True)
    except ResponseError:  # planted there, and no set-aside since moved it aside
        return []
    if not entries:
        return []
    try:
        reasons: list[Any] = await redis.hmget(keys.garbage_why, [key for key, _ in entries])
    except ResponseError:
        reasons = [None] * len(entries)
    return [
        SetAside(key, printable(reason or b""), int(score))
        for (key, score), reason in zip(entries, reasons, strict=True)
    ]
