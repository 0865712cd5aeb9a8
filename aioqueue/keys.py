"""Every Redis key and channel name aioqueue uses, built in one place.

All keys of a queue start with ``aq:{<queue>}:``: the ``{...}`` hash tag puts them
in one Redis Cluster slot, so each Redis Function call touches a single slot.
"""

from __future__ import annotations

import re

PREFIX = "aq"
THROUGHPUT_BUCKET_MS = 10_000  # the Lua `finish` counts finished jobs per bucket of this size
_NAME = re.compile(r"^[^\s{}\x00]{1,200}$")
_JOB_ID = re.compile(r"^[^\s\x00]{1,200}$")


def check_queue_name(name: str) -> str:
    from aioqueue.errors import ConfigurationError

    if not _NAME.match(name):
        raise ConfigurationError(
            f"invalid queue name {name!r}: 1-200 characters, no spaces, braces or NUL"
        )
    return name


def check_job_id(job_id: str) -> str:
    from aioqueue.errors import ConfigurationError

    if not _JOB_ID.match(job_id):
        raise ConfigurationError(f"invalid job id {job_id!r}: 1-200 characters, no spaces or NUL")
    return job_id


def queue_prefix(queue: str) -> str:
    """The prefix every key of ``queue`` starts with; the Lua library derives the rest."""
    return f"{PREFIX}:{{{queue}}}:"


class QueueKeys:
    """Key names of one queue, for the Python side (reads and blocking waits)."""

    __slots__ = (
        "abort",
        "active",
        "cron",
        "dead",
        "garbage",
        "prefix",
        "ready",
        "sched",
        "stats",
        "wake",
        "winfo",
        "workers",
    )

    def __init__(self, queue: str) -> None:
        p = self.prefix = queue_prefix(check_queue_name(queue))
        self.ready = p + "ready"
        self.sched = p + "sched"
        self.active = p + "active"
        self.dead = p + "dead"
        self.wake = p + "wake"
        self.stats = p + "stats"
        self.workers = p + "workers"
        self.winfo = p + "winfo"
        self.garbage = p + "garbage"
        self.abort = p + "abort"
        self.cron = p + "cron"  # hash: cron job name -> last tick fired (ms)

    def job(self, job_id: str) -> str:
        return f"{self.prefix}j:{job_id}"

    def finished_in(self, bucket: int) -> str:
        """Count of jobs finished in 10-second bucket ``bucket`` (ms // THROUGHPUT_BUCKET_MS)."""
        return f"{self.prefix}tput:{bucket}"

    def lock(self, name: str) -> str:
        """Held by the delivery running a job with this lock: '<job id> <token>'."""
        return f"{self.prefix}lock:{name}"

    def lockq(self, name: str) -> str:
        """Jobs parked until this lock is free, oldest first."""
        return f"{self.prefix}lockq:{name}"


def client_channel(client_id: str) -> str:
    """Where completions of the jobs a client awaits are published."""
    return f"{PREFIX}:client:{client_id}"


def shard_client_channel(queue: str, client_id: str) -> str:
    """The sharded channel (in ``queue``'s slot) where a cluster client gets completions."""
    return f"{queue_prefix(queue)}client:{client_id}"
