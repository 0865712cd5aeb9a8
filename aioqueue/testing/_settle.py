"""Waiting until the live workers' queues are idle, without polling.

Idle is judged on Redis alone, by one Function call (timeline.lua ``aqt_idle``):
no ready job, no delayed job or lease deadline due on the test clock, no
delivery held by a live worker (an outcome not yet written still holds its
delivery). Between two looks the settler waits for a keyspace event on the
queues' lists and sorted sets (the private Redis publishes them), so a change
it could miss cannot happen between the look and the wait.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from aioqueue._protocol.envelope import decode_error
from aioqueue.errors import AioqueueError, JobFailed, JobTimedOut
from aioqueue.testing._build import timeline_function
from aioqueue.testing._env import Environment

__all__ = ["NotSettled", "Settler", "snapshot_dead"]

_WATCHED = ("ready", "sched", "active", "dead")


class NotSettled(AioqueueError, TimeoutError):
    """The queues were still busy when the time allowed to drain them ran out."""


async def snapshot_dead(redis: Redis, env: Environment, prefixes: list[str]) -> None:
    """Jobs dead-lettered before a worker starts are not its failures to raise."""
    for prefix in prefixes:
        if prefix not in env.reported:
            members: list[Any] = await redis.zrange(prefix + "dead", 0, -1)
            env.reported[prefix] = {m.decode() for m in members}


class Settler:
    """``async with Settler(env, redis) as s: await s.wait(...)``; one subscription."""

    def __init__(self, env: Environment, redis: Redis) -> None:
        self.env = env
        self.redis = redis
        self.prefixes = env.prefixes()
        self.ids = env.worker_ids()
        self._pubsub: PubSub | None = None

    async def __aenter__(self) -> Settler:
        db = self.redis.connection_pool.connection_kwargs.get("db", 0)
        channels = [f"__keyspace@{db}__:{p}{name}" for p in self.prefixes for name in _WATCHED]
        if channels:
            pubsub = self.redis.pubsub()
            self._pubsub = pubsub
            await pubsub.subscribe(*channels)
            confirmed = 0
            while confirmed < len(channels):  # only then can no change go unseen
                msg = await pubsub.get_message(timeout=None)
                if msg and msg["type"] == "subscribe":
                    confirmed += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pubsub is not None:
            with anyio.CancelScope(shield=True):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def wait(self, *, fail_fast: bool, timeout: float, look_first: bool = True) -> None:
        """Returns once idle; with fail_fast raises for the first job dead-lettered.

        look_first=False: the caller knows the queues are busy and a watched key
        is about to change (it has just woken a worker).
        """
        why = "woken"
        try:
            with anyio.fail_after(timeout):
                if not look_first:
                    await self._changed()
                while True:
                    why, dead = await self._look()
                    if fail_fast:
                        await self._raise_dead(dead)
                    if not why:
                        return
                    await self._changed()
        except TimeoutError:
            raise NotSettled(f"the queues were not idle after {timeout}s: {why}") from None

    async def _look(self) -> tuple[str, list[int]]:
        if not self.prefixes:
            return "", []
        out = await self.redis.fcall(
            timeline_function("idle"),
            len(self.prefixes),
            *self.prefixes,
            self.env.now_ms,
            *self.ids,
        )
        return out[0].decode(), [int(n) for n in out[1:]]

    async def _changed(self) -> None:
        assert self._pubsub is not None
        await self._pubsub.get_message(timeout=None)
        while await self._pubsub.get_message(timeout=0.0) is not None:
            pass  # one look for every event that came together

    async def _raise_dead(self, counts: list[int]) -> None:
        for prefix, count in zip(self.prefixes, counts, strict=True):
            if count == 0:
                continue
            reported = self.env.reported.setdefault(prefix, set())
            members: list[Any] = await self.redis.zrange(prefix + "dead", 0, -1)  # by time
            new = [m.decode() for m in members if m.decode() not in reported]
            if new:
                reported.add(new[0])
                raise await self._failure(prefix, new[0])

    async def _failure(self, prefix: str, job_id: str) -> BaseException:
        queue = prefix[len("aq:{") : -len("}:")]
        recorded = self.env.failures.get((queue, job_id))
        if recorded is not None:
            return recorded  # raised with the traceback the task gave it
        # nothing raised in this process (an unknown task, arguments that do not
        # decode, a lost worker): the error the worker stored
        stored: bytes | None = await self.redis.hget(f"{prefix}j:{job_id}", "e")  # type: ignore[assignment]
        info = decode_error(stored)
        cls: Any = JobTimedOut if info.timed_out else JobFailed
        failure: BaseException = cls(
            job_id=job_id,
            exc_type=info.type,
            exc_message=info.message,
            remote_traceback=info.traceback,
            code=info.code,
        )
        return failure
