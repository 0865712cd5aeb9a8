"""Property: whatever garbage is in a queue's keys, the worker lives, every well-formed
job ends exactly as it would have, and every malformed thing is in the garbage area
with its reason, its raw bytes kept.

Each example builds a queue (jobs ready, due in the scheduled set, and held by a
worker that died), then replaces random keys by random values of random types, sets
random job fields to random bytes and pushes random entries into the ready list and
the scheduled and active sets. One burst worker drains it. The oracle below is the
rule the Functions follow (see ``read_job`` in lua/garbage.lua), written again.

Short in ``make test``; ``AIOQUEUE_HYPOTHESIS=long`` runs thousands of examples.
"""

from __future__ import annotations

import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioqueue import Queue, Worker
from aioqueue._protocol.envelope import decode_envelope
from aioqueue._protocol.garbage import read_garbage
from aioqueue._protocol.keys import THROUGHPUT_BUCKET_MS, QueueKeys
from aioqueue.errors import MalformedJobError
from tests import tasks
from tests.garbage_helpers import KINDS, plant, raw
from tests.redis_server import RedisServer

LONG = os.environ.get("AIOQUEUE_HYPOTHESIS") == "long"

STATUSES = {b"queued", b"scheduled", b"active", b"complete", b"failed", b"aborted"}
# the type each fixed key holds; "int" is a string Redis can count with
EXPECTED = {
    "ready": "list",
    "sched": "zset",
    "active": "zset",
    "wake": "list",
    "stats": "hash",
    "seq": "int",
    "dead": "zset",
    "workers": "zset",
    "winfo": "hash",
    "garbage": "zset",
    "garbage:why": "hash",
    "garbage:new": "list",
    "tput": "int",
}
# touched by every drain whatever else the example holds: a wrong type must be set aside
ALWAYS = {"ready", "sched", "active", "wake", "workers", "winfo", "garbage:new"}
FIELDS = ["s", "a", "l", "d", "u", "ab", "q", "e", "wt", "k"]
INERT = {"q", "e", "wt", "k"}  # fields no Function or worker decision reads on these paths

ITEM = st.binary(max_size=10)
VALUE = st.tuples(st.sampled_from(KINDS), st.lists(ITEM, min_size=1, max_size=4))


@dataclass
class Scenario:
    jobs: list[tuple[str, str]]  # (task: add | boom, where: ready | sched | active)
    keys: dict[str, tuple[str, list[bytes]]]  # fixed key name -> planted (type, items)
    job_keys: dict[int, tuple[str, list[bytes]]]  # job index -> its key replaced whole
    fields: dict[tuple[int, str], bytes]  # (job index, field) -> random bytes
    junk: dict[str, list[bytes]]  # ready | sched | active -> entries pushed


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    jobs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "boom"]), st.sampled_from(["ready", "sched", "active"])
            ),
            min_size=1,
            max_size=6,
        )
    )
    index = st.integers(0, len(jobs) - 1)
    return Scenario(
        jobs,
        draw(st.dictionaries(st.sampled_from(sorted(EXPECTED)), VALUE, max_size=4)),
        draw(st.dictionaries(index, VALUE, max_size=2)),
        draw(st.dictionaries(st.tuples(index, st.sampled_from(FIELDS)), ITEM, max_size=4)),
        draw(
            st.dictionaries(
                st.sampled_from(["ready", "sched", "active"]),
                st.lists(ITEM, min_size=1, max_size=4),
                max_size=3,
            )
        ),
    )


def redis_int(value: bytes) -> bool:
    """What INCR accepts: a signed 64-bit decimal, no sign but '-', no leading zeros."""
    try:
        n = int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return str(n).encode() == value and -(2**63) <= n < 2**63 - 1


def field_ok(name: bytes, value: bytes) -> bool:
    """The Lua CHECKS."""
    if name == b"s":
        return value in STATUSES
    if name in (b"a", b"l", b"ab"):
        return len(value) <= 12 and re.fullmatch(rb"0|-?[1-9][0-9]*", value) is not None
    if name == b"u":
        return len(value) >= 2 and value[:1] in (b"w", b"d")
    return True


CLAIM = [b"s", b"a", b"l", b"d", b"u", b"ab"]
FIRST_READ = {"ready": CLAIM, "sched": [b"s"], "active": [b"s", b"l", b"ab"]}


def verdict(where: str, before: tuple[str, Any], mutated: set[str]) -> str:
    """How a job found at ``where`` must end, from its fields before the drain:
    'ok' as it would have; 'aside' set aside whole as it was; 'aside-late' set aside
    once promoted or reaped (so with its status changed); 'quarantine' set aside by the
    worker, its payload unreadable; 'any' a changed but valid job (no rule to check)."""
    kind, fields = before
    if kind != "hash" or b"s" not in fields:
        return "aside"
    if not all(field_ok(k, fields[k]) for k in FIRST_READ[where] if k in fields):
        return "aside"
    wanted = {"ready": b"queued", "sched": b"scheduled", "active": b"active"}[where]
    if fields[b"s"] != wanted or (where == "active" and b"ab" in fields):
        return "any"  # passed over, or aborted at the reap
    if where == "active":  # the reap counts the lost delivery
        fields = {**fields, b"l": str(int(fields.get(b"l", b"0")) + 1).encode()}
    late = "aside" if where == "ready" else "aside-late"
    if not all(field_ok(k, fields[k]) for k in CLAIM if k in fields) or b"d" not in fields:
        return late
    if b"ab" in fields:
        return "any"  # aborted by the claim
    try:
        decode_envelope(fields[b"d"])
    except MalformedJobError:
        return "quarantine"
    return "any" if mutated - INERT else "ok"


async def build(queue: Queue, name: str, s: Scenario) -> list[str]:
    keys = QueueKeys(name)
    ids: list[str] = []

    async def enqueue(i: int, **options: Any) -> None:
        t = tasks.add if s.jobs[i][0] == "add" else tasks.boom
        args = (i, 1) if t is tasks.add else ("boom",)
        job = await queue.enqueue(t.options(**options), *args)  # type: ignore[arg-type]
        ids[i] = job.id

    ids.extend([""] * len(s.jobs))
    for i, (_, where) in enumerate(s.jobs):
        if where == "active":
            await enqueue(i)
    if "active" in {w for _, w in s.jobs}:
        # a worker claims them and dies: their leases (0 ms) lapse at once
        await queue.scripts.claim(name, 100, "died", 0)
    for i, (_, where) in enumerate(s.jobs):
        if where == "sched":
            await enqueue(i, delay=3600)
            await queue.redis.zadd(keys.sched, {ids[i]: 1}, xx=True)  # now due
        elif where == "ready":
            await enqueue(i)
    for (i, field), value in s.fields.items():
        await queue.redis.hset(keys.job(ids[i]), field, value)
    for i, (kind, items) in s.job_keys.items():
        await plant(queue.redis, keys.job(ids[i]), kind, items)
    for where, entries in s.junk.items():
        if where not in s.keys:
            if where == "ready":
                await queue.redis.lpush(keys.ready, *entries)
            else:
                await queue.redis.zadd(keys.prefix + where, {e: 2 for e in entries})
    for fixed, (kind, items) in s.keys.items():
        for key in await fixed_keys(queue, keys, fixed):
            await plant(queue.redis, key, kind, items)
    return ids


async def fixed_keys(queue: Queue, keys: QueueKeys, name: str) -> list[str]:
    if name != "tput":
        return [keys.prefix + name]
    seconds, micros = await queue.redis.time()
    bucket = (seconds * 1000 + micros // 1000) // THROUGHPUT_BUCKET_MS
    return [keys.finished_in(bucket), keys.finished_in(bucket + 1)]  # the drain may cross one


async def check(url: str, s: Scenario) -> None:
    name = f"p-{secrets.token_hex(6)}"
    keys = QueueKeys(name)
    async with Queue(url, name=name) as queue:
        ids = await build(queue, name, s)
        planted = {
            key: await raw(queue.redis, key)
            for fixed in s.keys
            for key in await fixed_keys(queue, keys, fixed)
        }
        jobs_before = [await raw(queue.redis, keys.job(i)) for i in ids]
        worker = Worker(
            [tasks.add, tasks.boom], redis_url=url, queues=[name], burst=True, concurrency=20
        )
        with anyio.fail_after(30):
            await worker.run()  # returns: the worker lived through all of it
        assert worker.redis_errors == 0

        aside = await read_garbage(queue.redis, name)
        ours = [a for a in aside if a.reason]  # planted members of a planted index have none
        aside_raw = [(a, await raw(queue.redis, a.key)) for a in ours]
        stray = Counter(
            (value, a.reason.split(" entry ")[0])
            for a, (kind, value) in aside_raw
            if kind == "string"
        )

        # every job: ends as it would have, or is in the garbage area with its reason
        for i, (task_kind, where) in enumerate(s.jobs):
            mutated = {f for (j, f) in s.fields if j == i}
            if where in s.keys:
                continue  # its entry went with the replaced key: nothing names it any more
            v = verdict(where, jobs_before[i], mutated)
            job_key = keys.job(ids[i])
            mark = f"{keys.prefix}garbage:j:{ids[i]}:".encode()
            moved = [(a, r) for a, r in aside_raw if a.key.startswith(mark)]
            if v == "ok":
                fields = await queue.redis.hgetall(job_key)
                if task_kind == "add":
                    assert fields[b"s"] == b"complete", (i, fields)
                    assert msgspec.msgpack.decode(fields[b"r"]) == i + 1
                else:
                    assert fields[b"s"] == b"failed", (i, fields)
                    assert await queue.redis.zscore(keys.dead, ids[i]) is not None
            elif v == "aside":
                assert [r for _, r in moved] == [jobs_before[i]], (i, jobs_before[i], aside)
                assert not await queue.redis.exists(job_key)
            elif v == "aside-late":
                assert len(moved) == 1, (i, jobs_before[i], aside)
                kept = moved[0][1][1]
                changed = {"sched": {"s"}, "active": {"s", "k", "w", "l"}}[where]  # by the move
                raw_fields = {f.encode() for f in mutated - changed}
                assert all(kept[f] == jobs_before[i][1][f] for f in raw_fields), (
                    kept,
                    jobs_before[i],
                )
                assert not await queue.redis.exists(job_key)
            elif v == "quarantine":
                assert len(moved) == 1, (i, jobs_before[i], aside)
                assert moved[0][1][1][b"d"] == jobs_before[i][1][b"d"]
                assert "payload" in moved[0][0].reason

        # junk entries: each kept, as it was, with a reason naming where it was found
        expected_strays: Counter[tuple[bytes, str]] = Counter()
        for where, entries in s.junk.items():
            if where not in s.keys:
                entries = entries if where == "ready" else list(dict.fromkeys(entries))
                expected_strays.update((e, where) for e in entries)
        for where in ("ready", "sched", "active"):
            if where in s.keys and s.keys[where][0] == EXPECTED[where]:
                entries = s.keys[where][1]
                entries = entries if where == "ready" else list(dict.fromkeys(entries))
                expected_strays.update((e, where) for e in entries)
        assert not expected_strays - stray, (expected_strays, stray)

        # planted fixed keys: set aside whole, raw, or left where they were, never lost
        for key, before in planted.items():
            suffix = key[len(keys.prefix) :]
            fixed = "tput" if suffix.startswith("tput:") else suffix
            want = EXPECTED[fixed]
            now = await raw(queue.redis, key)
            mark = f"{keys.prefix}garbage:{fixed}".encode()
            copies = [a for a, r in aside_raw if r == before and a.key.startswith(mark)]
            wrong = before[0] != ("string" if want == "int" else want) or (
                want == "int" and not redis_int(before[1])
            )
            if wrong and fixed in ALWAYS:
                assert copies, (key, before, aside)
            elif wrong:
                assert copies or now == before, (key, before, now, aside)
            elif fixed in ("stats", "garbage:why"):
                assert copies or set(before[1]) <= set(now[1]), (key, before, now)
            elif fixed in ("dead", "garbage"):
                assert {m for m, _ in before[1]} <= {m for m, _ in now[1]}, (key, before, now)
        for a in ours:
            assert await queue.redis.hget(keys.garbage_why, a.key), a


@pytest.mark.skipif(not LONG, reason="long run: AIOQUEUE_HYPOTHESIS=long")
@pytest.mark.timeout(4 * 3600)
@settings(
    max_examples=5000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_garbage_anywhere_long(redis_server: RedisServer, scenario: Scenario) -> None:
    anyio.run(check, redis_server.url, scenario)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_garbage_anywhere_is_set_aside_and_every_well_formed_job_ends_as_it_would(
    redis_server: RedisServer, scenario: Scenario
) -> None:
    anyio.run(check, redis_server.url, scenario)
