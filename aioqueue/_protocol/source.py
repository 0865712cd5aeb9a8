"""The text of the Redis Functions library: its parts (``lua/*.lua``) and a prelude
generated here, from what the Python side defines.

The library is one text for Redis (``FUNCTION LOAD`` takes one chunk), kept in
parts of at most 400 lines along its seams, assembled in the fixed order of
``PARTS``. Between the header and the first part comes the prelude: Lua
``local`` constants made from the Python side's own definitions, so the
producer, the worker and the Lua never spell a key suffix, a status or a
payload constant twice. The version is a hash of the assembled text, prelude
included: a change on either side is a new library, never two under one name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources

from aioqueue._protocol import codes, signing
from aioqueue._protocol.envelope import ENVELOPE_VERSION, JobStatus
from aioqueue._protocol.keys import CLIENT_CHANNEL, EVENT_NAMES, LAYOUT, SUFFIXES

__all__ = ["LIBRARY", "PARTS", "VERSION", "assemble", "prelude", "version_of"]

# in load order: each part may use what the ones before it define
PARTS = (
    "header",  # the library's doc comment: the job hash, time, locks, KEYS
    "base",  # clock, event stream, payload reading (task names, error types)
    "garbage",  # the garbage area, kcall, checked job reads, argument checks
    "jobs",  # moves shared by Functions: wake-ups, scheduling, notify, reaping
    "locks",  # task locks (unique=True): take, park, release
    "enqueue",
    "claim",
    "finish",
    "liveness",  # heartbeat, deregister
    "cron",  # cron_define, cron_fire
    "admin",  # abort, watch, unwatch, quarantine, requeue, purge
    "register",  # every Function registered, with the event stream's cap
)

# what the claim must know of the payload to read a job's task name, and the layout
CONSTANTS: Mapping[str, str | int] = {
    "SIGNED_MAGIC": signing.MAGIC.decode(),
    "SIGNED_HEADER": signing.HEADER,
    "ENVELOPE_VERSION": ENVELOPE_VERSION,
    "LAYOUT": LAYOUT,  # the queue data layout this library writes (keys.py)
}


# the ones the Lua writes itself (a job aborted while not running, a lock held)
_CODES = (codes.ABORTED, codes.LOCK_HELD)


def _lua(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    if "'" in value or "\\" in value or "\n" in value:
        raise ValueError(f"not a plain Lua string: {value!r}")
    return f"'{value}'"


def _table(name: str, items: Mapping[str, str], why: str) -> str:
    body = ", ".join(f"{k} = {_lua(v)}" for k, v in items.items())
    return f"-- {why}\nlocal {name} = {{{body}}}\n"


def prelude(
    constants: Mapping[str, str | int] = CONSTANTS,
    statuses: Mapping[str, str] | None = None,
    suffixes: Mapping[str, str] = SUFFIXES,
) -> str:
    """The Lua ``local`` definitions generated from the Python side.

    statuses: JobStatus member name (lower case) -> its value, by default."""
    if statuses is None:
        statuses = {s.name.lower(): s.value for s in JobStatus}
    return "".join(
        [
            "-- generated from the Python side at load (aioqueue/_protocol/source.py)\n",
            *(f"local {name} = {_lua(v)}\n" for name, v in constants.items()),
            _table("ST", statuses, "job statuses, the `s` field (envelope.py's JobStatus)"),
            # the same as a set (built here: no `pairs` while the library loads)
            f"local STATUSES = {{{', '.join(f'[{_lua(v)}] = true' for v in statuses.values())}}}\n",
            _table("KEY", suffixes, "what follows the queue's prefix in each key (keys.py)"),
            _table("EV", {n: n for n in EVENT_NAMES}, "event names (keys.py's EVENT_NAMES)"),
            _table("CODE", {c: c for c in _CODES}, "error codes the Functions store (codes.py)"),
            f"local CLIENT_CHANNEL = {_lua(CLIENT_CHANNEL)} -- + a client id (keys.py)\n",
        ]
    )


def read_parts() -> dict[str, str]:
    lua = resources.files("aioqueue._protocol").joinpath("lua")
    return {name: lua.joinpath(f"{name}.lua").read_text() for name in PARTS}


def assemble(parts: Mapping[str, str] | None = None, generated: str | None = None) -> str:
    """The library's text before ``__VERSION__`` is filled in (what the version hashes)."""
    parts = read_parts() if parts is None else parts
    generated = prelude() if generated is None else generated
    header, *rest = (parts[name] for name in PARTS)
    return "\n".join(["#!lua name=aioqueue___VERSION__", header, generated, *rest])


def version_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]  # noqa: S324 - a name, not security


_TEXT = assemble()
VERSION = version_of(_TEXT)
LIBRARY = _TEXT.replace("__VERSION__", VERSION)
