"""A queue's event stream read back (``aq:{<queue>}:events``, docs/reference/events.md).

The Functions append the entries; this module only reads. Stream ids are the
cursor: an id is the Redis time in ms of its entry, then a sequence number, so
one id means the same instant in every queue and a reader that asks for what
follows an id misses nothing still in the stream.

Each queue's stream lives in its queue's slot (the hash tag ``{queue}``), so on
a Redis Cluster every read names one queue; on one Redis, ``follow`` reads any
number of streams in one blocking XREAD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import refusal
from aioqueue.errors import ConfigurationError

__all__ = ["NUMERIC", "Event", "follow", "last_id", "parse_entry", "read"]

# fields whose values are decimal integers (all values are strings in a stream)
NUMERIC = frozenset({"attempt", "ts", "duration_ms", "wait_ms", "due"})


def _text(raw: Any) -> str:
    return raw.decode(errors="backslashreplace") if isinstance(raw, bytes) else str(raw)


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Event:
    """What one job did, as a queue's event stream tells it.

    Attributes:
        id: the stream id of its entry (``<ms>-<seq>``): read on from it to miss
            nothing. The jobs of one entry (written by one Function call) share it.
        queue: the queue.
        event: what happened (``enqueued``, ``started``, ``completed``, ...).
        job: the job id.
        task: the task's name ('' when its payload could not be read).
        attempt: the attempt it is about (0 before the first); None if unreadable.
        ts: when, in Unix ms of the Redis server's clock; None if unreadable.
        extra: the other fields as stored (``worker``, ``duration_ms``, ``wait_ms``,
            ``error``, ``due``).
    """

    id: str
    queue: str
    event: str
    job: str
    task: str
    attempt: int | None
    ts: int | None
    extra: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """One flat object: the fields, numbers as numbers, ``id`` and ``queue``."""
        out: dict[str, Any] = {
            "id": self.id,
            "queue": self.queue,
            "event": self.event,
            "job": self.job,
            "task": self.task,
            "attempt": self.attempt,
            "ts": self.ts,
        }
        for name, value in self.extra.items():
            number = _int(value) if name in NUMERIC else None
            out[name] = value if number is None else number
        return out


def _unescape(item: str) -> str:
    # a shared entry writes ' ' and '%' inside an item as %20 and %25, nothing else
    return item.replace("%20", " ").replace("%25", "%") if "%" in item else item


def parse_entry(queue: str, stream_id: Any, fields: Mapping[Any, Any]) -> list[Event]:
    """An entry as redis-py returns it, as the events of its jobs in the order written.

    An entry of several jobs has ``n``; each other field holds either one value for
    all of them or ``n`` values split by spaces (docs/reference/events.md). Anything
    missing or unreadable reads as '' or None; an entry whose lists do not match
    ``n`` reads as its first job's event alone, never as an error."""
    text = {_text(k): _text(v) for k, v in fields.items()}
    sid = _text(stream_id)
    rows = _int(text.pop("n", None)) or 1
    if rows == 1:
        return [_event(queue, sid, text)]
    split = {name: value.split(" ") for name, value in text.items()}
    if any(len(items) not in (1, rows) for items in split.values()):
        rows = 1
    out = []
    for i in range(rows):
        one = {
            name: _unescape(items[i] if len(items) == rows else items[0])
            for name, items in split.items()
        }
        out.append(_event(queue, sid, one))
    return out


def _event(queue: str, stream_id: str, text: dict[str, str]) -> Event:
    return Event(
        id=stream_id,
        queue=queue,
        event=text.pop("event", "?"),
        job=text.pop("job", ""),
        task=text.pop("task", ""),
        attempt=_int(text.pop("attempt", None)),
        ts=_int(text.pop("ts", None)),
        extra=text,
    )


def _refused(exc: ResponseError, queue: str) -> Exception:
    # WRONGTYPE: garbage where the stream belongs (the next event a Function
    # writes sets it aside); said as a RedisRefused with that code
    return refusal(exc, f"reading the events of {queue!r}")


async def last_id(redis: RedisClient, queue: str) -> str:
    """The id of the queue's newest entry ('0-0' when the stream is empty or absent)."""
    try:
        newest: Any = await redis.xrevrange(QueueKeys(queue).events, "+", "-", count=1)
    except ResponseError as exc:
        raise _refused(exc, queue) from None
    return _text(newest[0][0]) if newest else "0-0"


async def read(redis: RedisClient, queue: str, after: str | None, count: int) -> list[Event]:
    """Events, oldest first: the newest ``count`` when ``after`` is None, else those of
    the first ``count`` entries after stream id ``after`` (``0`` for the oldest kept)."""
    key = QueueKeys(queue).events
    try:
        if after is None:
            found: Any = await redis.xrevrange(key, "+", "-", count=count)
            found = list(reversed(found))
        else:
            found = await redis.xrange(key, f"({after}" if after not in ("0", "-") else "-",
                                       "+", count=count)  # fmt: skip
    except ResponseError as exc:
        raise _refused(exc, queue) from None
    out = [event for stream_id, fields in found for event in parse_entry(queue, stream_id, fields)]
    # the newest `count` events; read on from an id, whole entries (their jobs share it)
    return out[-count:] if after is None else out


async def follow(
    redis: RedisClient, after: Mapping[str, str], count: int, block_ms: int
) -> list[Event]:
    """What follows each queue's id in ``after`` (queue -> stream id), waiting up to
    ``block_ms`` for a first entry (XREAD BLOCK: no polling); [] when none came.

    One XREAD for every queue on one Redis; a Redis Cluster takes one queue a call.
    """
    if isinstance(redis, RedisCluster) and len(after) > 1:
        raise ConfigurationError("on a Redis Cluster, follow one queue per call")
    streams: dict[Any, Any] = {QueueKeys(q).events: i for q, i in after.items()}
    by_key = {QueueKeys(q).events: q for q in after}
    try:
        replies: Any = await redis.xread(streams, count=count, block=block_ms)
    except ResponseError as exc:
        raise _refused(exc, ", ".join(after)) from None
    # a list of [key, entries] on RESP2, a dict on RESP3
    items = replies.items() if isinstance(replies, dict) else (replies or [])
    out: list[Event] = []
    for key, entries in items:
        queue = by_key[_text(key)]
        for stream_id, fields in entries:
            out.extend(parse_entry(queue, stream_id, fields))
    return out
