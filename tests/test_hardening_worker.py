"""Off the happy path in the worker: no option value, exception, payload or Redis
stall in one job can crash a worker or change the fate of another job (issue #11)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import (
    ConfigurationError,
    JobFailed,
    JobStatus,
    JobTimedOut,
    Queue,
    Retry,
    SerializationError,
    Worker,
    current_job,
    task,
)
from aioqueue._protocol.envelope import ENVELOPE_VERSION, Envelope, encode_envelope
from aioqueue._protocol.functions import Scripts
from aioqueue._protocol.keys import QueueKeys
from aioqueue.cron import every
from tests import tasks
from tests.conftest import running
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

UVLOOP_ONLY = pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": True})])

# state shared between a test and the tasks its in-process worker runs
shared: dict[str, Any] = {}


class StrFails(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


@task(max_attempts=2, backoff=0.001, backoff_max=0.002)
async def surrogate() -> None:
    raise ValueError("file name \udcff from os.listdir")


@task(max_attempts=1)
async def str_fails() -> None:
    raise StrFails()


@task(max_attempts=2)
async def retry_in(minutes: float) -> str:
    if current_job().attempt == 1:
        raise Retry(defer=timedelta(minutes=minutes))
    return "second"


@task(max_attempts=3)
async def retry_bad(defer: float) -> None:
    raise Retry(defer=defer)


@task(max_attempts=3)
async def retry_mutated() -> None:
    exc = Retry(defer=1)
    exc.defer = math.nan  # set after construction: the executor checks it too
    raise exc


@task(max_attempts=1)
async def huge_error(size: int) -> None:
    raise ValueError("x" * size)


@task(max_attempts=1)
async def deep_result(depth: int) -> object:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def deep_msgpack(depth: int) -> bytes:
    """``depth`` nested one-element arrays: msgspec raises RecursionError decoding it."""
    return b"\x91" * depth + b"\xc0"


class RawSerializer:
    """A producer-side serializer that sends the bytes it is given: a hostile or broken producer."""

    name = "raw"

    def dumps(self, value: Any) -> bytes:
        return shared["raw"]  # type: ignore[no-any-return]

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError


def worker_for(url: str, queue_name: str, *extra: Any, **kwargs: Any) -> Worker:
    return Worker(
        [tasks.add, surrogate, str_fails, retry_in, retry_bad, retry_mutated, huge_error, *extra],
        redis_url=url,
        queues=[queue_name],
        **kwargs,
    )


async def enqueue_envelope(queue: Queue, queue_name: str, job_id: str, **fields: Any) -> None:
    """Stores a job whose envelope no validating producer would write (an old or hostile one)."""
    data = queue.serializer.dumps([[1, 2], {}])
    envelope = Envelope(ENVELOPE_VERSION, tasks.add.name, data, **fields)
    await queue.scripts.enqueue(queue_name, [(job_id, encode_envelope(envelope), 0, 0, "")])


async def failure(queue: Queue, job_id: str) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        await queue.job(job_id).result(timeout=10)
    return caught.value


# -- 1, 9: options are checked where they are given -------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("result_ttl", math.inf),
        ("result_ttl", math.nan),
        ("result_ttl", -math.inf),
        ("timeout", math.nan),
        ("timeout", math.inf),
        ("timeout", -1),
        ("timeout", 0),
        ("timeout", "5"),
        ("delay", math.nan),
        ("delay", math.inf),
        ("delay", -1),
        ("delay", timedelta(seconds=-5)),
        ("delay", True),
        ("at", datetime(2030, 1, 1)),  # naive: which zone?
        ("at", 1234.0),
        ("max_attempts", 0),
        ("max_attempts", 1.5),
    ],
)
def test_bad_job_options_are_refused_where_they_are_given(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        tasks.add.options(**{option: value})


@pytest.mark.parametrize(
    "options",
    [
        {"result_ttl": math.inf},
        {"result_ttl": math.nan},
        {"timeout": math.nan},
        {"timeout": -3},
        {"backoff": math.nan},
        {"backoff_max": math.inf},
        {"backoff": -1},
        {"max_lost": -1},
    ],
)
def test_bad_task_options_are_refused_at_the_decorator(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):

        @task(**options)
        async def never() -> None: ...


@pytest.mark.parametrize("value", [math.inf, math.nan, "1h"])
def test_bad_worker_result_ttl_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="result_ttl"):
        Worker([tasks.add], result_ttl=value)


def test_good_options_still_pass() -> None:
    tasks.add.options(delay=timedelta(seconds=1), timeout=0.5, result_ttl=-1, max_attempts=1)
    tasks.add.options(delay=0, result_ttl=0)
    tasks.add.options(at=datetime(2030, 1, 1, tzinfo=UTC))
    assert Retry(defer=timedelta(minutes=1)).defer == 60.0
    assert Retry(defer=2).defer == 2.0
    assert Retry().defer is None


async def test_a_bad_option_in_a_stored_payload_dead_letters_that_job_only(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    """Envelopes from Redis are not trusted: inf/nan/negative options fail the job."""
    bad = {
        "ttl-inf": {"result_ttl": math.inf},
        "ttl-nan": {"result_ttl": math.nan},
        "timeout-nan": {"timeout": math.nan},
        "timeout-neg": {"timeout": -1.0},
        "attempts-neg": {"max_attempts": -2},
    }
    for job_id, fields in bad.items():
        await enqueue_envelope(queue, queue_name, job_id, **fields)
    async with running(worker_for(redis_url, queue_name)):
        for job_id, fields in bad.items():
            failed = await failure(queue, job_id)
            assert failed.exc_type == "aioqueue.errors.ConfigurationError"
            assert next(iter(fields)) in failed.exc_message
        assert await (await queue.enqueue(tasks.add, 2, 3)).result(timeout=5) == 5
    dead = await queue.redis.zrange(QueueKeys(queue_name).dead, 0, -1)
    assert sorted(d.decode() for d in dead) == sorted(bad)


# -- 2: building an outcome never raises ---------------------------------------------------


async def test_an_exception_message_with_a_lone_surrogate_is_recorded(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name)):
        job = await queue.enqueue(surrogate)  # retried once, then dead-lettered
        failed = await failure(queue, job.id)
        assert failed.exc_type == "builtins.ValueError"
        assert failed.exc_message == "file name \\udcff from os.listdir"
        assert "\\udcff" in failed.remote_traceback
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2
    assert (await job.info()).attempts == 2


async def test_an_exception_whose_str_raises_is_recorded(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name)):
        job = await queue.enqueue(str_fails)
        failed = await failure(queue, job.id)
        assert failed.exc_type.endswith("StrFails")
        assert "str() failed" in failed.exc_message
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2


async def test_retry_takes_a_timedelta(queue: Queue, redis_url: str, queue_name: str) -> None:
    keys = QueueKeys(queue_name)
    async with running(worker_for(redis_url, queue_name)):
        job = await queue.enqueue(retry_in, 1.0)
        with anyio.fail_after(10):
            while await job.status() is not JobStatus.SCHEDULED:
                await anyio.sleep(0.01)  # state only Redis holds
        seconds, _ = await queue.redis.time()
        due = float(await queue.redis.zscore(keys.sched, job.id) or 0) / 1000
        assert 50 < due - seconds <= 61  # a minute from now, not the backoff's second
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2


@pytest.mark.parametrize("defer", [math.inf, math.nan, -1.0])
async def test_retry_with_a_bad_delay_fails_the_job_at_once(
    queue: Queue, redis_url: str, queue_name: str, defer: float
) -> None:
    async with running(worker_for(redis_url, queue_name)):
        bad = await queue.enqueue(retry_bad, defer)
        mutated = await queue.enqueue(retry_mutated)
        for job in (bad, mutated):
            failed = await failure(queue, job.id)
            assert failed.exc_type == "aioqueue.errors.ConfigurationError"
            assert "defer" in failed.exc_message
            assert "Retry" in failed.remote_traceback  # where the task raised it
            assert (await job.info()).attempts == 1  # asking again would not help
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2


async def test_a_payload_too_deep_to_decode_fails_that_job_only(
    redis_url: str, queue_name: str
) -> None:
    shared["raw"] = deep_msgpack(200_000)
    async with (
        Queue(redis_url, name=queue_name) as queue,
        Queue(redis_url, name=queue_name, serializer=RawSerializer()) as hostile,
        running(worker_for(redis_url, queue_name)),
    ):
        job = await hostile.enqueue(tasks.add, 1, 2)
        failed = await failure(queue, job.id)
        assert failed.exc_type == "aioqueue.errors.SerializationError"
        assert "recursion" in failed.exc_message.lower()
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2


async def test_a_value_too_deep_to_encode_is_a_serialization_error(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    deep: list[Any] = []
    for _ in range(200_000):
        deep = [deep]
    with pytest.raises(SerializationError):
        await queue.enqueue(tasks.echo, deep)
    async with running(worker_for(redis_url, queue_name, deep_result)):
        job = await queue.enqueue(deep_result, 200_000)
        failed = await failure(queue, job.id)
        assert failed.exc_type == "aioqueue.errors.SerializationError"
        assert (await job.info()).attempts == 1


# -- 4: error records are capped ------------------------------------------------------------


async def test_error_records_are_capped(queue: Queue, redis_url: str, queue_name: str) -> None:
    keys = QueueKeys(queue_name)
    size = 10 << 20
    async with running(worker_for(redis_url, queue_name)):
        job = await queue.enqueue(huge_error, size)
        failed = await failure(queue, job.id)
    stored = await queue.redis.hstrlen(keys.job(job.id), "e")
    assert stored <= 64 * 1024 + 512  # the default cap (plus the record's framing)
    assert failed.exc_message.startswith("xxxx")
    assert "cut" in failed.exc_message
    assert "huge_error" in failed.remote_traceback  # the frames survive the cut

    async with running(worker_for(redis_url, queue_name, max_error_size=2000)):
        job = await queue.enqueue(huge_error, size)
        await failure(queue, job.id)
    assert await queue.redis.hstrlen(keys.job(job.id), "e") <= 2000 + 512


def test_max_error_size_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_error_size"):
        Worker([tasks.add], max_error_size=10)


# -- 5: threads of `def` tasks are bounded, counting abandoned ones ------------------------


@task(timeout=0.2, max_attempts=3, backoff=0.001, backoff_max=0.002)
def stuck() -> None:
    with shared["lock"]:
        shared["in_thread"] += 1
        shared["most"] = max(shared["most"], shared["in_thread"])
    try:
        shared["gate"].wait(30)
    finally:
        with shared["lock"]:
            shared["in_thread"] -= 1


async def test_stuck_sync_tasks_never_hold_more_threads_than_sync_threads(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    shared.update(lock=threading.Lock(), gate=threading.Event(), in_thread=0, most=0)
    try:
        async with running(worker_for(redis_url, queue_name, stuck, sync_threads=4)):
            jobs = await queue.enqueue_many(stuck.call() for _ in range(10))
            for job in jobs:  # 30 attempts in all, every one past its timeout
                with pytest.raises(JobTimedOut):
                    await job.result(timeout=30)
            assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2
    finally:
        shared["gate"].set()
    assert shared["most"] == 4  # the four stuck threads, never a fifth beside them


@task
def thread_job() -> str:
    return current_job().job_id


async def test_sync_tasks_see_their_job_context(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name, thread_job, sync_threads=2)):
        jobs = await queue.enqueue_many(thread_job.call() for _ in range(20))
        assert [await j.result(timeout=10) for j in jobs] == [j.id for j in jobs]


# -- 7: a worker may be handed its own job again ---------------------------------------------


@task(max_attempts=3)
async def stalls_its_loop() -> str:
    if current_job().attempt == 1:
        shared["stalled"].set()
        # blocks the event loop, so no heartbeat goes out, until another worker's
        # reaper has put the job back in the queue: its lease expired meanwhile
        assert shared["reaped"].wait(30)
        while not shared["second_ran"].is_set():
            # told the delivery was lost: it finishes anyway, as careless code does
            with contextlib.suppress(asyncio.CancelledError):
                await shared["second_ran"].wait()
        return "first"
    shared["second_ran"].set()
    return "second"


def reap_when_expired(url: str, queue_name: str, job_id: str) -> None:
    """In a thread (the test's loop is stalled): once the job's lease is past by Redis's
    clock, runs another worker's heartbeat, which reaps expired leases."""
    # this test's events, taken now: the next parametrisation puts new ones in `shared`
    stalled, reaped = shared["stalled"], shared["reaped"]

    async def reap() -> None:
        client = aioredis.from_url(url)
        try:
            # until the test ends (it sets `reaped` whatever happened), and 60 s at most:
            # a job settled by another path must not leave this thread polling Redis
            # into the tests that follow
            with anyio.move_on_after(60):
                while not reaped.is_set():
                    deadline = await client.zscore(QueueKeys(queue_name).active, job_id)
                    if deadline is not None and await redis_ms(client) > deadline:
                        await Scripts(client).heartbeat(
                            queue_name, "reaper", 30_000, b"{}", 60_000, []
                        )
                        return
                    await anyio.sleep(0.02)  # state only Redis holds: its clock
        finally:
            await client.aclose()

    assert stalled.wait(30)
    try:
        anyio.run(reap)
    finally:
        reaped.set()


async def test_a_worker_handed_its_own_job_again_keeps_both_deliveries_apart(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    shared.update(second_ran=anyio.Event(), stalled=threading.Event(), reaped=threading.Event())
    worker = worker_for(redis_url, queue_name, stalls_its_loop, lease=1.0)
    async with running(worker):
        job = await queue.enqueue(stalls_its_loop)
        reaper = threading.Thread(target=reap_when_expired, args=(redis_url, queue_name, job.id))
        reaper.start()
        try:
            assert await job.result(timeout=15) == "second"  # the stale delivery is refused
        finally:
            shared["reaped"].set()
            reaper.join(30)
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2
        with anyio.fail_after(10):
            while len(worker._run.deliveries):
                await anyio.sleep(0.01)  # the first delivery ends after the second
    info = await job.info()
    assert (info.status, info.attempts) == (JobStatus.COMPLETE, 2)


# -- 3: one bad outcome never fails the rest of its batch ------------------------------------


@task(max_attempts=1, timeout=3600)
async def held_until_stop() -> None:
    shared["started"] += 1
    if shared["started"] == shared["expect"]:
        shared["all_started"].set()
    await anyio.sleep(3600)


async def test_an_outcome_redis_refuses_does_not_hold_back_the_others(queue_name: str) -> None:
    """Handing jobs back at a stop, after an operator narrowed the worker's ACL so
    that it no longer reaches one job's key: Redis refuses that job's hand-back (and
    the whole batch it is in); the others still go back at once."""
    keys = QueueKeys(queue_name)
    ok = [f"ok-{i}" for i in range(10)]
    shared.update(started=0, expect=len(ok) + 1, all_started=anyio.Event())
    async with own_redis("--user", "app", "on", ">pw", "~*", "&*", "+@all") as server:
        url = f"unix://app:pw@{server.socket}"
        worker = worker_for(url, queue_name, held_until_stop, grace=0, lease=5)
        async with Queue(url, name=queue_name) as queue:
            calls = [held_until_stop.options(job_id=i).call() for i in ok]
            calls.insert(4, held_until_stop.options(job_id="bad").call())
            await queue.enqueue_many(calls)
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await shared["all_started"].wait()
                # the queue's keys but the job hashes (the prefix is a Function's key),
                # and the hashes of the ok jobs
                allowed = [f"~{keys.prefix}", f"~{keys.prefix}[^j]*", f"~{keys.prefix}j:ok-*"]
                await queue.redis.execute_command("ACL", "SETUSER", "app", "resetkeys", *allowed)
                worker.stop()
            # worker.run returned: every outcome was written or set aside, none raised
            for job_id in ok:
                info = await queue.job(job_id).info()
                assert (info.status, info.attempts) == (JobStatus.QUEUED, 0), job_id
            assert worker.outcomes_refused == 1


BUSY_SCRIPT = """
local stop_at = tonumber(redis.call('TIME')[1]) + 2
while tonumber(redis.call('TIME')[1]) < stop_at do end
return 1
"""


async def test_a_busy_redis_delays_outcomes_and_sets_none_aside(queue_name: str) -> None:
    """BUSY (another client's slow script) refuses every call for a while: a batch that
    meets it waits and goes again, its jobs are not taken for bad ones."""
    shared.update(holding=anyio.Event(), release=anyio.Event())
    async with own_redis("--busy-reply-threshold", "50") as server:
        url = server.url
        worker = worker_for(url, queue_name, hold_during_oom)
        async with Queue(url, name=queue_name) as queue, running(worker):
            job = await queue.enqueue(hold_during_oom)
            await shared["holding"].wait()
            admin = aioredis.from_url(url, socket_timeout=None)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(admin.eval, BUSY_SCRIPT, 0)
                    await anyio.sleep(0.3)  # into the script's run, past the threshold
                    shared["release"].set()  # its outcome meets BUSY
            finally:
                await admin.aclose()
            assert await job.result(timeout=20) == "finished"
        assert worker.outcomes_refused == 0
        assert await queue.redis.zcard(QueueKeys(queue_name).garbage) == 0
        # BUSY is "not now": precise wake-ups stay on
        assert worker._run.fetcher.waker._can_unblock


async def test_without_client_unblock_delayed_jobs_still_run(queue_name: str) -> None:
    acl = ("--user", "app", "on", ">pw", "~*", "&*", "+@all", "-client|unblock")
    async with own_redis(*acl) as server:
        url = f"unix://app:pw@{server.socket}"
        worker = worker_for(url, queue_name)
        async with Queue(url, name=queue_name) as queue, running(worker):
            job = await queue.enqueue(tasks.add.options(delay=0.2), 1, 2)
            assert await job.result(timeout=10) == 3
        assert (
            not worker._run.fetcher.waker._can_unblock
        )  # NOPERM is "never": it falls back for good


# -- 6: heartbeats keep their schedule through a Redis stall ---------------------------------


@task(max_attempts=5)
async def counted_hold(key: str) -> str:
    runs = shared["runs"]
    runs[key] = runs.get(key, 0) + 1
    if len(runs) == 5:
        shared["all_running"].set()
    await shared["release"].wait()
    return key


@asynccontextmanager
async def own_redis(*extra: str) -> AsyncIterator[RedisServer]:
    server = RedisServer(extra=list(extra))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def next_heartbeat(client: aioredis.Redis) -> None:
    """Returns as Redis runs the next heartbeat call of a worker (seen on MONITOR)."""
    async with client.monitor() as monitor:
        async for entry in monitor.listen():
            command = entry["command"]
            if entry.get("client_type") != "lua" and "FCALL" in command and "heartbeat" in command:
                return


@UVLOOP_ONLY
async def test_a_redis_stall_shorter_than_the_lease_runs_no_job_twice(queue_name: str) -> None:
    """Redis holds every write for 12.5 s (CLIENT PAUSE, as in a failover) right after
    a heartbeat; leases are 13.5 s.

    A heartbeat sent into the stall waits out its call timeout (10 s) and is dropped
    with its connection. The next must go out at once: one a full interval later
    (2 s) comes after the leases expired, and the worker's own claim re-runs its jobs."""
    shared.update(runs={}, release=anyio.Event(), all_running=anyio.Event())
    async with own_redis() as server:
        url = server.url
        keys = QueueKeys(queue_name)
        worker = Worker(
            [counted_hold], redis_url=url, queues=[queue_name], lease=13.5, heartbeat=2.0
        )
        async with Queue(url, name=queue_name, timeout=30) as queue, running(worker):
            jobs = await queue.enqueue_many(counted_hold.call(f"k{i}") for i in range(5))
            await shared["all_running"].wait()
            client = aioredis.from_url(url, socket_timeout=None)
            try:
                await next_heartbeat(client)
                before = await lease_deadlines(client, keys)  # as that heartbeat set them
                await client.execute_command("CLIENT", "PAUSE", 12_500, "WRITE")
                # reads go on: wait until Redis's clock is a second past those deadlines
                await anyio.sleep(max(0.0, (max(before) + 1000 - await redis_ms(client)) / 1000))
                after = await lease_deadlines(client, keys)
            finally:
                await client.aclose()
            shared["release"].set()
            assert [await j.result(timeout=20) for j in jobs] == [f"k{i}" for i in range(5)]
        assert shared["runs"] == {f"k{i}": 1 for i in range(5)}
        assert len(after) == 5 and min(after) > max(before)  # heartbeats went on


async def lease_deadlines(client: aioredis.Redis, keys: QueueKeys) -> list[float]:
    return [score for _, score in await client.zrange(keys.active, 0, -1, withscores=True)]


async def redis_ms(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds * 1000 + micros / 1000


# -- 8: cron through out-of-memory and a changed schedule ------------------------------------


@task
async def record_tick() -> None:
    shared["ticks"].append(current_job().job_id)
    shared["ticked"].set()


@task(max_attempts=1)
async def hold_during_oom() -> str:
    shared["holding"].set()
    await shared["release"].wait()
    return "finished"


async def test_cron_skips_ticks_while_redis_is_out_of_memory(queue_name: str) -> None:
    shared.update(ticks=[], ticked=anyio.Event(), holding=anyio.Event(), release=anyio.Event())
    async with own_redis() as server:
        url = server.url
        worker = Worker(
            [record_tick, hold_during_oom],
            redis_url=url,
            queues=[queue_name],
            cron=[every(timedelta(milliseconds=100), record_tick)],
        )
        async with Queue(url, name=queue_name) as queue, running(worker):
            job = await queue.enqueue(hold_during_oom)
            await shared["holding"].wait()
            await shared["ticked"].wait()
            admin = aioredis.from_url(url)
            try:
                await admin.config_set("maxmemory", 1)  # every new job is refused now
                with anyio.fail_after(10):
                    while not await rejected_fcalls(admin):
                        await anyio.sleep(0.05)  # state only Redis holds
                rejected = await rejected_fcalls(admin)
                shared["release"].set()
                assert await job.result(timeout=10) == "finished"  # running jobs finish
                while await rejected_fcalls(admin) < rejected + 2:
                    await anyio.sleep(0.05)  # more ticks skipped, the worker still up
                await admin.config_set("maxmemory", 0)
                shared["ticked"] = anyio.Event()
                shared["ticks"].clear()
                with anyio.fail_after(10):
                    await shared["ticked"].wait()  # ticks fire again once memory is back
            finally:
                await admin.aclose()


async def rejected_fcalls(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_fcall", {}).get("rejected_calls", 0))


async def test_one_cron_name_with_two_schedules_follows_the_newest(
    redis_url: str, queue_name: str
) -> None:
    """A rolling deploy changed the schedule: the worker started last wins, the other
    stops firing that name (and says so), so the ticks are those of one schedule."""
    shared.update(ticks=[], ticked=anyio.Event())
    old = Worker(
        [record_tick],
        redis_url=redis_url,
        queues=[queue_name],
        cron=[every(timedelta(milliseconds=200), record_tick, name="report")],
    )
    new = Worker(
        [record_tick],
        redis_url=redis_url,
        queues=[queue_name],
        cron=[every(timedelta(milliseconds=300), record_tick, name="report")],
    )
    async with running(old):
        await shared["ticked"].wait()
        async with running(new):
            shared["ticks"].clear()
            with anyio.fail_after(20):
                while len(shared["ticks"]) < 8:
                    shared["ticked"] = anyio.Event()
                    await shared["ticked"].wait()
    fired = [int(job_id.rsplit(":", 1)[1]) for job_id in shared["ticks"]]
    assert all(tick % 300 == 0 for tick in fired), fired
