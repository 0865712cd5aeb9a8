"""Every Redis key and channel name aioqueue uses, built in one place.

All keys of a queue start with ``aq:{<queue>}:``: the ``{...}`` hash tag puts them
in one Redis Cluster slot, so each Redis Function call touches a single slot.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator

PREFIX = "aq"
THROUGHPUT_BUCKET_MS = 10_000  # the Lua `finish` counts finished jobs per bucket of this size
MINUTE_MS = 60_000  # and attempts ended per outcome per minute, for about an hour
# entries a queue's event stream keeps (XADD MAXLEN ~): about 1 MB of Redis memory
EVENTS_MAXLEN = 10_000
# The data layout of a queue's keys: recorded in its `meta` hash (`layout`) by
# the first enqueue; a worker refuses a queue recorded with a newer one. Raise
# it when a release stores a queue in a way older releases would misread.
LAYOUT = 1
# what the Functions append to it, the `event` field (docs/reference/events.md)
EVENT_NAMES = (
    "enqueued",
    "scheduled",
    "started",
    "completed",
    "retried",
    "failed",
    "dead",
    "aborted",
    "released",
    "reclaimed",
    "set_aside",
)
# printable ASCII without space (and, in a queue name, without the hash tag's braces)
_NAME_ASCII = re.compile(r"^[\x21-\x7a|~]{1,200}$")
_JOB_ID_ASCII = re.compile(r"^[\x21-\x7e]{1,200}$")
# control, format (bidi overrides, zero-width), surrogate and line/paragraph separators:
# in a name an operator reads in a terminal they could rewrite what it shows
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _printable(text: object, ascii_form: re.Pattern[str], refused: str) -> bool:
    if not isinstance(text, str):
        return False
    if text.isascii():  # the common case, one regex match
        return ascii_form.match(text) is not None
    return 0 < len(text) <= 200 and not any(
        c in refused or c.isspace() or unicodedata.category(c) in _UNPRINTABLE for c in text
    )


def check_queue_name(name: str) -> str:
    from aioqueue.errors import ConfigurationError

    if not _printable(name, _NAME_ASCII, "{}"):
        raise ConfigurationError(
            f"invalid queue name {name!r}: 1-200 characters, no spaces, braces,"
            " control or format characters"
        )
    return name


def check_job_id(job_id: str) -> str:
    from aioqueue.errors import ConfigurationError

    if not _printable(job_id, _JOB_ID_ASCII, ""):
        raise ConfigurationError(
            f"invalid job id {job_id!r}: 1-200 characters, no spaces, control or format characters"
        )
    return job_id


# What follows a queue's prefix in each of its keys, and in its sharded channels:
# the Lua library's prelude is generated from this table (_protocol/source.py),
# so both sides spell each key once. Entries ending in ':' take a name after them.
SUFFIXES: dict[str, str] = {
    "ready": "ready",
    "sched": "sched",
    "active": "active",
    "dead": "dead",
    "wake": "wake",
    "cpu": "cpu",
    "cwake": "cwake",
    "stats": "stats",
    "workers": "workers",
    "winfo": "winfo",
    "garbage": "garbage",
    "garbage_why": "garbage:why",
    "garbage_new": "garbage:new",
    "abort": "abort",
    "cron": "cron",
    "crondef": "crondef",
    "events": "events",
    "seq": "seq",  # the delivery token counter
    "meta": "meta",  # hash: facts about the queue itself (its data layout)
    "job": "j:",
    "tput": "tput:",
    "tpm": "tpm:",
    "nudge": "nudge:",
    "lock": "lock:",
    "lockq": "lockq:",
    "claimed": "claimed:",  # a worker's last claim, for a replay (see claim.lua)
    "client": "client:",  # a cluster client's sharded result channel
}
CLIENT_CHANNEL = f"{PREFIX}:client:"  # + a client id: where its results are published
_S = SUFFIXES


def queue_prefix(queue: str) -> str:
    """The prefix every key of ``queue`` starts with; the Lua library derives the rest."""
    return f"{PREFIX}:{{{queue}}}:"


def library_prefix(version: str) -> str:
    """The prefix of the keys of one library version (not of a queue): its
    ``workers`` set names the live workers that run it (see versions.py)."""
    return f"{PREFIX}:library:{{{version}}}:"


class QueueKeys:
    """Key names of one queue, for the Python side (reads and blocking waits)."""

    __slots__ = (
        "abort",
        "active",
        "cpu",
        "cron",
        "crondef",
        "cwake",
        "dead",
        "events",
        "garbage",
        "garbage_new",
        "garbage_why",
        "meta",
        "prefix",
        "ready",
        "sched",
        "seq",
        "stats",
        "wake",
        "winfo",
        "workers",
    )

    def __init__(self, queue: str) -> None:
        p = self.prefix = queue_prefix(check_queue_name(queue))
        self.ready = p + _S["ready"]
        self.sched = p + _S["sched"]
        self.active = p + _S["active"]
        self.dead = p + _S["dead"]
        self.wake = p + _S["wake"]
        # CPU-bound jobs a claim moved aside (past the claimer's free CPU slots),
        # and the wake list of idle workers that have a free CPU slot
        self.cpu = p + _S["cpu"]
        self.cwake = p + _S["cwake"]
        self.stats = p + _S["stats"]
        self.workers = p + _S["workers"]
        self.winfo = p + _S["winfo"]
        # the garbage area (see aioqueue._protocol.garbage): what was set aside, why, not logged yet
        self.garbage = p + _S["garbage"]
        self.garbage_why = p + _S["garbage_why"]
        self.garbage_new = p + _S["garbage_new"]
        self.abort = p + _S["abort"]
        self.cron = p + _S["cron"]  # hash: cron job name -> last tick fired (ms)
        self.crondef = p + _S["crondef"]  # hash: cron job name -> its newest schedule
        # stream: what happened to the queue's jobs (docs/reference/events.md)
        self.events = p + _S["events"]
        self.seq = p + _S["seq"]
        self.meta = p + _S["meta"]

    def claimed(self, worker_id: str) -> str:
        """A worker's last claim on the queue, kept one lease for a replay."""
        return f"{self.prefix}{_S['claimed']}{worker_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}{_S['job']}{job_id}"

    def finished_in(self, bucket: int) -> str:
        """Count of jobs finished in 10-second bucket ``bucket`` (ms // THROUGHPUT_BUCKET_MS)."""
        return f"{self.prefix}{_S['tput']}{bucket}"

    def outcomes_in(self, minute: int) -> str:
        """Hash outcome -> attempts ended in minute ``minute`` (ms // 60,000), kept ~1 hour."""
        return f"{self.prefix}{_S['tpm']}{minute}"

    def nudge(self, worker_id: str) -> str:
        """One worker's own wake list: pushed by the worker itself when a CPU slot
        frees while it blocks without ``cwake`` (it could not take those jobs)."""
        return f"{self.prefix}{_S['nudge']}{worker_id}"

    def lock(self, name: str) -> str:
        """Held by the delivery running a job with this lock: '<job id> <token>'."""
        return f"{self.prefix}{_S['lock']}{name}"

    def lockq(self, name: str) -> str:
        """Jobs parked until this lock is free, oldest first."""
        return f"{self.prefix}{_S['lockq']}{name}"


def client_channel(client_id: str) -> str:
    """Where completions of the jobs a client awaits are published."""
    return CLIENT_CHANNEL + client_id


def shard_client_channel(queue: str, client_id: str) -> str:
    """The sharded channel (in ``queue``'s slot) where a cluster client gets completions."""
    return f"{queue_prefix(queue)}{SUFFIXES['client']}{client_id}"


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
# each random byte as one base32 character (its low 5 bits: 256 is a multiple
# of 32, so each character stays uniform): a whole buffer of them in one C call
_TO_B32 = bytes.maketrans(bytes(range(256)), bytes(ord(_B32[b & 31]) for b in range(256)))
_ID_LEN = 16
_IDS_PER_REFILL = 256
# ids made ahead: one os.urandom call (a syscall) per 256 ids, not per id, which
# cost a quarter of a concurrent enqueue's client CPU. ``next`` on a list iterator
# is one C call under the GIL, so two threads never get the same id.
_ids: Iterator[str] = iter(())


def _refill() -> Iterator[str]:
    global _ids
    chars = os.urandom(_ID_LEN * _IDS_PER_REFILL).translate(_TO_B32).decode("ascii")
    _ids = iter([chars[i : i + _ID_LEN] for i in range(0, len(chars), _ID_LEN)])
    return _ids


def _forget_ids() -> None:
    # a forked child must not hand out the ids its parent also holds
    global _ids
    _ids = iter(())


os.register_at_fork(after_in_child=_forget_ids)


def new_job_id() -> str:
    """16 characters of [a-z2-7], 80 random bits: safe in shells and never taken
    for a CLI option (a URL-safe token can start with '-')."""
    job_id = next(_ids, None)
    return job_id if job_id is not None else next(_refill())
