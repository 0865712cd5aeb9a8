"""Garbage in a queue's keys is set aside with its raw bytes and its reason, logged, and
never fatal: the worker lives and every well-formed job completes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import JobAborted, JobFailed, JobStatus, Queue, Worker, task
from aioqueue._protocol.garbage import read_garbage
from aioqueue._protocol.keys import THROUGHPUT_BUCKET_MS, QueueKeys
from tests import tasks
from tests.conftest import running
from tests.garbage_helpers import captured_logs, plant, raw, set_aside_lines

pytestmark = pytest.mark.anyio


def burst_worker(redis_url: str, queue_name: str, **kwargs: Any) -> Worker:
    """Runs until the queue is drained, then stops by itself: its end is the event."""
    return Worker(
        [tasks.add, tasks.boom, tasks.sleepy, locked],
        redis_url=redis_url,
        queues=[queue_name],
        burst=True,
        **kwargs,
    )


@task(unique=True, max_attempts=1)
async def locked(x: int) -> int:
    return x


async def drain(redis_url: str, queue_name: str) -> None:
    """One burst worker, then another: the second's claim takes the set-aside lines the
    first one's last calls (final flush, deregister) left for the next claim to log."""
    for _ in range(2):
        await burst_worker(redis_url, queue_name).run()


async def aside_by_key(queue: Queue, queue_name: str) -> dict[bytes, str]:
    return {a.key: a.reason for a in await read_garbage(queue.redis, queue_name)}


# -- claim: a job that does not parse is set aside, the rest of the batch runs ----------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"s": "queued", "a": "not a number", "d": "x"}, "job field a does not parse"),
        ({"s": "queued", "a": "0", "l": "1e3", "d": "x"}, "job field l does not parse"),
        ({"s": "queued", "a": "0", "ab": "soon", "d": "x"}, "job field ab does not parse"),
        ({"s": "queued", "a": "0", "u": "?", "d": "x"}, "job field u does not parse"),
        ({"s": "bogus", "a": "0", "d": "x"}, "job field s does not parse"),
        ({"a": "0", "d": "x"}, "job hash without a status"),
        ({"s": "queued", "a": "0"}, "queued job without a payload"),
    ],
)
async def test_a_job_that_does_not_parse_is_set_aside_and_the_batch_is_claimed(
    queue: Queue, redis_url: str, queue_name: str, fields: dict[str, str], reason: str
) -> None:
    keys = QueueKeys(queue_name)
    first = [await queue.enqueue(tasks.add, i, 1) for i in range(3)]
    await queue.redis.hset(keys.job("bad"), mapping=fields)
    await queue.redis.lpush(keys.ready, "bad")  # claimed in the same batch as the others
    rest = [await queue.enqueue(tasks.add, i, 2) for i in range(3)]
    with captured_logs() as logs:
        await drain(redis_url, queue_name)
    assert [await j.result(timeout=5) for j in first + rest] == [1, 2, 3, 2, 3, 4]
    (aside,) = await read_garbage(queue.redis, queue_name)
    assert aside.reason == reason
    assert aside.key.startswith(keys.job("bad").replace(":j:", ":garbage:j:").encode())
    assert await queue.redis.hgetall(aside.key) == {
        k.encode(): v.encode() for k, v in fields.items()
    }
    assert set_aside_lines(logs) == {aside.key.decode(): reason}
    assert not await queue.redis.exists(keys.job("bad"))


async def test_an_expired_lease_of_a_job_whose_lost_count_is_not_a_number_is_set_aside(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    jobs = [await queue.enqueue(tasks.add, i, 10) for i in range(3)]
    # a worker that claims them and dies: its leases (1 ms) lapse at once
    dead = (await queue.scripts.claim(queue_name, 10, "dead-worker", 1)).jobs
    assert len(dead) == 3
    await queue.redis.hset(keys.job(jobs[1].id), "l", "lots")
    await drain(redis_url, queue_name)
    assert await jobs[0].result(timeout=5) == 10
    assert await jobs[2].result(timeout=5) == 12
    (aside,) = await read_garbage(queue.redis, queue_name)
    assert aside.reason == "job field l does not parse"
    assert (await queue.redis.hgetall(aside.key))[b"l"] == b"lots"


async def test_finish_sets_aside_a_job_that_stopped_parsing_and_writes_the_rest(
    queue: Queue, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    for i in range(3):
        await queue.enqueue(tasks.add, i, 0)
    claimed = (await queue.scripts.claim(queue_name, 10, "w", 30_000)).jobs
    await queue.redis.hset(keys.job(claimed[1].id), "a", "three")  # written while it ran
    handed_back = [(j.id, j.token, "release", b"", -1, 0) for j in claimed]
    assert await queue.scripts.finish(queue_name, handed_back) == [1, 2, 1]
    assert await queue.redis.zcard(keys.active) == 0
    assert sorted(await queue.redis.lrange(keys.ready, 0, -1)) == sorted(
        [claimed[0].id.encode(), claimed[2].id.encode()]
    )
    (aside,) = await read_garbage(queue.redis, queue_name)
    assert aside.reason == "job field a does not parse"


# -- entries that name no job -------------------------------------------------------------


async def test_junk_in_the_ready_list_is_kept_with_its_reason_and_logged(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    junk = [b"ghost", b"\xff\xfe not utf-8", b"two words", b"", b"x" * 1000, b"nul\x00byte"]
    await queue.redis.lpush(keys.ready, *junk)
    job = await queue.enqueue(tasks.add, 2, 2)
    with captured_logs() as logs:
        await drain(redis_url, queue_name)
    assert await job.result(timeout=5) == 4
    aside = await read_garbage(queue.redis, queue_name)
    kept = {await queue.redis.get(a.key): a.reason for a in aside}
    assert kept == {
        b"ghost": "ready entry names no job",
        **{j: "ready entry is not a job id" for j in junk if j != b"ghost"},
    }
    assert sorted(set_aside_lines(logs).values()) == sorted(kept.values())
    stats = await queue.redis.hgetall(keys.stats)
    assert stats[b"quarantined"] == str(len(junk)).encode()
    assert b"orphans" not in stats


async def test_entries_of_the_scheduled_and_active_sets_that_name_no_job_are_kept(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.zadd(keys.sched, {"no-such-job": 1})
    await queue.redis.zadd(keys.active, {"nor-this": 1})
    job = await queue.enqueue(tasks.add, 1, 1)
    await drain(redis_url, queue_name)
    assert await job.result(timeout=5) == 2
    kept = {
        await queue.redis.get(a.key): a.reason for a in await read_garbage(queue.redis, queue_name)
    }
    assert kept == {
        b"no-such-job": "sched entry names no job",
        b"nor-this": "active entry names no job",
    }


# -- fixed keys of the wrong type ---------------------------------------------------------

# every key a writing Function touches under a fixed (so plantable) name, with a value
# of a type it cannot hold
FIXED = [
    ("seq", "list"),
    ("seq", "string"),  # not a counter
    ("dead", "string"),
    ("workers", "string"),
    ("winfo", "list"),
    ("stats", "string"),
    ("ready", "string"),
    ("sched", "hash"),
    ("active", "list"),
    ("wake", "zset"),
    ("garbage", "string"),
    ("garbage:why", "list"),
    ("garbage:new", "hash"),
]


@pytest.mark.parametrize(("name", "kind"), FIXED)
async def test_a_fixed_key_of_the_wrong_type_is_set_aside_logged_and_the_jobs_run(
    queue: Queue, redis_url: str, queue_name: str, name: str, kind: str
) -> None:
    keys = QueueKeys(queue_name)
    key = keys.prefix + name
    await plant(queue.redis, key, kind, [b"planted", b"value"])
    planted = await raw(queue.redis, key)
    if name != "ready":
        await queue.redis.lpush(keys.ready, "ghost")  # something to set aside, always
    good = await queue.enqueue(tasks.add, 20, 22)
    bad = await queue.enqueue(tasks.boom, "dead-lettered")  # writes to `dead`
    with captured_logs() as logs:
        await drain(redis_url, queue_name)
    assert await good.result(timeout=5) == 42
    with pytest.raises(JobFailed):
        await bad.result(timeout=5)
    aside = await aside_by_key(queue, queue_name)
    (moved,) = [k for k in aside if k.startswith(f"{keys.prefix}garbage:{name}:".encode())]
    assert await raw(queue.redis, moved) == planted
    assert "refused this" in aside[moved]
    assert moved.decode() in set_aside_lines(logs)
    assert await queue.redis.zscore(keys.dead, bad.id) is not None


async def test_a_stats_counter_that_is_not_a_number_is_set_aside(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.hset(keys.stats, mapping={"complete": "many", "mine": "kept"})
    job = await queue.enqueue(tasks.add, 1, 2)
    await drain(redis_url, queue_name)
    assert await job.result(timeout=5) == 3
    ((key, reason),) = (await aside_by_key(queue, queue_name)).items()
    assert await queue.redis.hgetall(key) == {b"complete": b"many", b"mine": b"kept"}
    assert "not an integer" in reason
    assert (await queue.redis.hgetall(keys.stats))[b"complete"] == b"1"


async def test_planted_throughput_buckets_are_set_aside(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    seconds, micros = await queue.redis.time()
    bucket = (seconds * 1000 + micros // 1000) // THROUGHPUT_BUCKET_MS
    planted = [keys.finished_in(b) for b in (bucket, bucket + 1)]  # the run may cross one
    for key in planted:
        await queue.redis.rpush(key, "planted")
    job = await queue.enqueue(tasks.add, 1, 2)
    await drain(redis_url, queue_name)
    assert await job.result(timeout=5) == 3
    aside = await aside_by_key(queue, queue_name)
    assert len(aside) >= 1
    for key, reason in aside.items():
        assert "refused this list" in reason
        assert await queue.redis.lrange(key, 0, -1) == [b"planted"]
    untouched = [k for k in planted if await queue.redis.type(k) == b"list"]
    assert len(untouched) + len(aside) == len(planted)  # moved aside or left alone, never lost


async def test_enqueue_sets_planted_keys_aside_even_with_the_garbage_index_planted(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.set(keys.ready, "not a list")
    await queue.redis.set(keys.garbage, "not a sorted set")
    await queue.redis.set(keys.stats, "not a hash")
    job = await queue.enqueue(tasks.add, 3, 4)  # a raw ResponseError before
    await drain(redis_url, queue_name)
    assert await job.result(timeout=5) == 7
    kept = {(await raw(queue.redis, k))[1] for k in await aside_by_key(queue, queue_name)}
    assert kept == {b"not a list", b"not a sorted set", b"not a hash"}


async def test_a_job_key_of_the_wrong_type_under_a_new_jobs_id_is_set_aside(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.rpush(keys.job("taken"), "a list")
    await queue.redis.hset(keys.job("hashed"), mapping={"x": "no job"})
    a = await queue.enqueue(tasks.add.options(job_id="taken"), 1, 1)
    b = await queue.enqueue(tasks.add.options(job_id="hashed"), 2, 2)
    assert a.created and b.created
    await drain(redis_url, queue_name)
    assert [await a.result(timeout=5), await b.result(timeout=5)] == [2, 4]
    kept = [(await raw(queue.redis, k))[1] for k in await aside_by_key(queue, queue_name)]
    assert sorted(map(str, kept)) == sorted([str([b"a list"]), str({b"x": b"no job"})])


async def test_a_lock_holding_junk_is_set_aside_and_the_job_takes_the_lock(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.set(keys.lock(locked.name), "junk without a token")
    await queue.redis.set(keys.lockq(locked.name), "not a sorted set")
    job = await queue.enqueue(locked, 5)
    await drain(redis_url, queue_name)
    assert await job.result(timeout=5) == 5
    kept = {
        (await raw(queue.redis, k))[1]: r
        for k, r in (await aside_by_key(queue, queue_name)).items()
    }
    assert kept[b"junk without a token"] == 'lock value is not "<job id> <token>"'
    assert "refused this string" in kept[b"not a sorted set"]


async def test_a_cron_tick_that_is_not_a_number_is_set_aside(queue: Queue, queue_name: str) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.hset(keys.cron, mapping={"nightly": "yesterday", "other": "123"})
    status, _ = await queue.scripts.cron_fire(queue_name, "nightly", 1, "cron-1", b"p", "")
    assert status == "fired"
    ((key, reason),) = (await aside_by_key(queue, queue_name)).items()
    assert reason == "last tick of cron nightly is not a number"
    assert await queue.redis.hgetall(key) == {b"nightly": b"yesterday", b"other": b"123"}
    assert await queue.redis.hget(keys.cron, "nightly") == b"1"


# -- the worker's loops ---------------------------------------------------------------------


async def test_junk_on_the_abort_channel_is_ignored_and_logged(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    worker = Worker([tasks.sleepy], redis_url=redis_url, queues=[queue_name])
    with captured_logs() as logs:
        async with running(worker):
            job = await queue.enqueue(tasks.sleepy, 60)
            with anyio.fail_after(10):
                while await job.status() is not JobStatus.ACTIVE:
                    await anyio.sleep(0.01)  # state only Redis holds: no event to wait on
            await queue.redis.publish(keys.abort, b"\xff\xfe\x00")
            await queue.redis.publish(keys.abort, b"unknown-job")
            assert await job.abort()  # published after the junk: handled after it
            with pytest.raises(JobAborted):
                await job.result(timeout=10)
    ignored = [e for e in logs if e["event"] == "worker.abort_ignored"]
    assert [e["data"] for e in ignored] == ["\\xff\\xfe\\x00"]


def _claim_errors(logs: list[dict[str, Any]]) -> int:
    return sum(1 for e in logs if e["event"] == "worker.redis_error" and e["loop"] == "claim")


async def test_an_error_reply_in_the_claim_loop_is_logged_counted_and_backed_off(
    redis_url: str, queue_name: str
) -> None:
    """An ACL that forgot one of the queue's keys: every claim is refused (NOPERM) until
    an operator fixes it, then the worker goes on by itself."""
    user = f"u-{queue_name}"
    prefix = QueueKeys(queue_name).prefix
    admin = aioredis.from_url(redis_url)
    keys = ("ready", "active", "wake", "seq", "stats", "dead", "cpu", "cwake", "events", "meta")
    patterns = [f"{prefix}{k}" for k in keys]
    patterns += [prefix, f"{prefix}j:*", f"{prefix}tput:*", f"{prefix}garbage*", f"{prefix}w*"]
    patterns += [f"{prefix}claimed:*"]  # each worker's last claim, for a claim sent again
    await admin.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=patterns, channels=["*"], commands=["+@all"]
    )
    url = redis_url.replace("unix://", f"unix://{user}:pw@")
    try:
        async with Queue(redis_url, name=queue_name) as queue:
            job = await queue.enqueue(tasks.add, 1, 1)
            worker = Worker([tasks.add], redis_url=url, queues=[queue_name])
            with captured_logs() as logs:
                async with running(worker):
                    with anyio.fail_after(10):
                        # two claims refused (the heartbeat's may come between them)
                        while _claim_errors(logs) < 2:
                            await anyio.sleep(0.01)
                    await admin.acl_setuser(user, enabled=True, keys=[f"{prefix}sched"])  # the fix
                    assert await job.result(timeout=10) == 2
        errors = [e for e in logs if e["event"] == "worker.redis_error"]
        claims = [e for e in errors if e["loop"] == "claim"]
        assert len(claims) >= 2
        assert all("can't access" in e["error"] for e in claims)  # NOPERM inside the Function
        counts = [e["count"] for e in errors]
        assert counts == list(range(1, len(errors) + 1))  # every error reply counted
        assert claims[1]["retry_in"] > claims[0]["retry_in"]  # backed off
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()


async def test_a_count_with_a_leading_zero_is_no_count(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    """Found by the property test: '00' looks like a number to a pattern, not to HINCRBY."""
    keys = QueueKeys(queue_name)
    jobs = [await queue.enqueue(tasks.add, i, 0) for i in range(2)]
    await queue.scripts.claim(queue_name, 10, "dead-worker", 0)
    await queue.redis.hset(keys.job(jobs[0].id), "l", "00")
    await drain(redis_url, queue_name)
    assert await jobs[1].result(timeout=5) == 1
    (aside,) = await read_garbage(queue.redis, queue_name)
    assert aside.reason == "job field l does not parse"
