"""Every error aioqueue raises is under its one root, and says what went wrong.

A real redis-server with real ACL users for the refusals (NOPERM), real garbage for
WRONGTYPE, real full queues for ``enqueue_many``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

from aioqueue import (
    AioqueueError,
    ConfigurationError,
    JobAborted,
    NotAllEnqueued,
    Queue,
    QueueFull,
    RedisRefused,
    Worker,
)
from aioqueue._protocol.functions import LIBRARY
from aioqueue._protocol.keys import QueueKeys
from tests import sched_tasks as st
from tests import tasks
from tests.conftest import running
from tests.redis_server import RedisServer
from tests.supervised import ROOT
from tests.test_scheduling import make_worker

pytestmark = pytest.mark.anyio

PASSWORD = "pw"
# each user lacks one permission a producer needs; `~* &* +@all` is everything
USERS = {
    "nofcall": ["~*", "&*", "+@all", "-fcall"],
    "noload": ["~*", "&*", "+@all", "-function"],
    "nochannels": ["~*", "resetchannels", "+@all"],
    "nokeys": ["resetkeys", "&*", "+@all"],
}


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    """A Redis of this module's own (its ACL users stay here), the library not loaded."""
    server = RedisServer()
    server.start()
    import redis

    client = redis.Redis.from_url(server.url)
    for user, rules in USERS.items():
        client.execute_command("ACL", "SETUSER", user, "on", f">{PASSWORD}", *rules)
    client.close()
    try:
        yield server
    finally:
        server.cleanup()


def as_user(server: RedisServer, user: str) -> str:
    return f"unix://{user}:{PASSWORD}@{server.socket}"


async def load_library(server: RedisServer) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(server.url)
    try:
        await client.function_load(LIBRARY, replace=True)
    finally:
        await client.aclose()


async def test_an_acl_refusing_function_load_is_a_typed_refusal(acl_redis: RedisServer) -> None:
    with pytest.raises(RedisRefused) as caught:
        async with Queue(as_user(acl_redis, "noload")):
            pass
    assert caught.value.code == "NOPERM"
    assert "FUNCTION LOAD" in str(caught.value) and "no permissions" in str(caught.value)


@pytest.mark.parametrize(
    ("user", "what"),
    [("nofcall", "'fcall' command"), ("nokeys", "keys"), ("nochannels", "channels")],
)
async def test_acl_refusals_are_typed_under_the_root(
    acl_redis: RedisServer, user: str, what: str
) -> None:
    await load_library(acl_redis)
    with pytest.raises(RedisRefused) as caught:
        async with Queue(as_user(acl_redis, user), name=f"q-{secrets.token_hex(3)}") as q:
            await q.enqueue(tasks.add, 1, 2)
    error = caught.value
    assert isinstance(error, AioqueueError)
    assert isinstance(error, ResponseError)  # code written against redis-py still catches it
    assert error.code == "NOPERM" and what in str(error)


@pytest.mark.parametrize("command", [["info"], ["jobs", "failed"], ["jobs", "retry", "--all"]])
def test_the_cli_reports_an_acl_refusal_in_one_line(
    acl_redis: RedisServer, command: list[str]
) -> None:
    url = as_user(acl_redis, "nokeys")
    done = subprocess.run(
        [sys.executable, "-m", "aioqueue", *command, "--queue", "q", "--redis-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("aioqueue: Redis refused") and ": NOPERM this user" in line, line
    assert PASSWORD not in line


async def test_a_wrong_typed_job_key_is_a_typed_refusal(queue: Queue, queue_name: str) -> None:
    job = queue.job("planted")
    await queue.redis.set(QueueKeys(queue_name).job("planted"), "not a hash")
    for read in (job.status, job.info):
        with pytest.raises(RedisRefused) as caught:
            await read()
        assert caught.value.code == "WRONGTYPE"


async def test_usage_mistakes_are_configuration_errors(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot use Redis URL"):
        Queue("nope://localhost")
    outside = Queue(redis_url)  # never entered with `async with`
    with pytest.raises(ConfigurationError, match="async with"):
        await outside.job("x").result(timeout=1)
    await outside._close_connections()
    async with Queue(redis_url) as q:
        with pytest.raises(ConfigurationError, match="expected a task"):
            await q.enqueue(42, 1)  # type: ignore[call-overload]


async def test_enqueue_many_over_queues_says_which_jobs_were_stored(
    redis_url: str, queue_name: str
) -> None:
    full, roomy = queue_name + "-full", queue_name + "-roomy"
    async with Queue(redis_url, name=queue_name, max_length=2) as q:
        await q.enqueue(tasks.add.options(queue=full), 0, 0)
        calls = [
            tasks.add.options(queue=roomy).call(1, 1),
            tasks.add.options(queue=full).call(2, 2),
            tasks.add.options(queue=roomy).call(3, 3),
            tasks.add.options(queue=full).call(4, 4),  # 1 + 2 > max_length: all refused
        ]
        try:
            await q.enqueue_many(calls)
        except QueueFull as exc:  # the one typed error, catchable as what went wrong
            error = exc
        assert isinstance(error, NotAllEnqueued) and isinstance(error, AioqueueError)
        assert [job.queue for job in error.stored] == [roomy, roomy]
        assert len(error.not_stored) == 2 and set(error.errors) == {full}
        assert f"queue {full!r} holds 1 jobs" in str(error)
        assert "stored 2 of 4 jobs" in str(error)
        for job in error.stored:  # they really are stored
            assert str(await job.status()) == "queued"
        for job_id in error.not_stored:
            with pytest.raises(AioqueueError):
                await q.job(job_id, queue=full).status()


async def test_queue_full_names_the_queue_not_its_key_prefix(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(redis_url, name=queue_name, max_length=1) as q:
        await q.enqueue(tasks.add, 1, 1)
        with pytest.raises(QueueFull) as caught:
            await q.enqueue(tasks.add, 2, 2)
    assert str(caught.value) == f"queue {queue_name!r} holds 1 jobs; its limit is 1"


async def test_a_job_dropped_for_a_held_lock_says_why(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:solo"
    async with running(make_worker(redis_url, queue_name)):
        first = await queue.enqueue(st.solo, key)
        await queue.redis.blpop([f"{key}:started"], timeout=5)
        second = await queue.enqueue(st.solo, key)
        with pytest.raises(JobAborted) as caught:
            await second.result(timeout=5)
        await queue.redis.rpush(f"{key}:go", 1)
        await first.result(timeout=5)
    assert caught.value.reason == f"lock {st.solo.name} held by job {first.id}"
    assert caught.value.code == "lock_held"
    assert str(caught.value) == f"job {second.id} was aborted: {caught.value.reason}"


async def test_aborting_a_queued_job_with_result_ttl_0_keeps_no_record(
    redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    async with Queue(redis_url, name=queue_name, result_ttl=0) as q:
        later = await q.enqueue(tasks.add.options(delay=60), 1, 1)
        queued = await q.enqueue(tasks.add, 2, 2)
        assert await later.abort() and await queued.abort()
        assert not await q.redis.exists(keys.job(later.id))  # in no list: gone at once
        # still in the ready list: a tombstone without its payload until claim drops it
        assert await q.redis.hgetall(keys.job(queued.id)) == {b"s": b"aborted"}
        with pytest.raises(JobAborted):
            await queued.result(timeout=5)
        await Worker([tasks.add], redis_url=redis_url, queues=[queue_name], burst=True).run()
        assert not await q.redis.exists(keys.job(queued.id))
        assert await q.redis.hget(keys.stats, "orphans") is None  # not taken for garbage
    async with Queue(redis_url, name=queue_name, result_ttl=-1) as q:
        kept = await q.enqueue(tasks.add.options(delay=60), 1, 1)
        assert await kept.abort()
        assert await q.redis.pttl(keys.job(kept.id)) == -1  # negative: kept until deleted


async def test_a_deadline_says_so(redis_url: str) -> None:
    from aioqueue._redis.errors import mapped_errors

    with pytest.raises(AioqueueError, match=r"did not answer within 0\.01s"):
        with mapped_errors(redis_url, 0.01), anyio.fail_after(0.01):
            await anyio.sleep(1)


@pytest.mark.skipif(
    hasattr(PubSub, "ssubscribe"),
    reason="this redis-py has sharded pub/sub (the floor venv, make test-floor, has not)",
)
def test_a_cluster_url_on_a_redis_py_without_sharded_pubsub_says_what_it_needs() -> None:
    with pytest.raises(ConfigurationError, match=r"redis-py 8\.0 or newer"):
        Queue("redis+cluster://127.0.0.1:7000")
