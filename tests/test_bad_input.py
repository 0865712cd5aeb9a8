"""Bad input gets a typed error and loses nothing."""

from __future__ import annotations

import time

import anyio
import pytest

from aioqueue import (
    JobFailed,
    JobStatus,
    Queue,
    RedisUnavailable,
    SerializationError,
    Worker,
    task_ref,
)
from aioqueue._protocol.garbage import read_garbage
from aioqueue._protocol.keys import QueueKeys
from aioqueue.errors import ConfigurationError
from tests import tasks
from tests.conftest import running
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


def worker_for(redis_url: str, queue_name: str, **kwargs: object) -> Worker:
    return Worker(
        [tasks.add, tasks.exits, tasks.sleepy, tasks.returns_object],
        redis_url=redis_url,
        queues=[queue_name],
        **kwargs,  # type: ignore[arg-type]
    )


async def test_unknown_task_is_dead_lettered_and_the_worker_lives(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name)):
        bad = await queue.enqueue("tests.tasks.does_not_exist", 1)
        with pytest.raises(JobFailed) as caught:
            await bad.result(timeout=5)
        assert caught.value.exc_type == "aioqueue.errors.UnknownTaskError"
        assert "does_not_exist" in caught.value.exc_message
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2
    assert await queue.redis.zscore(QueueKeys(queue_name).dead, bad.id) is not None


async def test_unencodable_argument_fails_at_enqueue_and_writes_nothing(
    queue: Queue, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    with pytest.raises(SerializationError):
        await queue.enqueue(tasks.echo, object())
    with pytest.raises(SerializationError):
        await queue.enqueue_many([tasks.add.call(1, 2), tasks.echo.call(lambda: None)])
    assert await queue.redis.llen(keys.ready) == 0
    assert [k async for k in queue.redis.scan_iter(match=keys.prefix + "*")] == []


async def test_unencodable_result_fails_the_job(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name)):
        job = await queue.enqueue(tasks.returns_object)
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=5)
        assert caught.value.exc_type == "aioqueue.errors.SerializationError"
    assert (await job.info()).attempts == 1  # running it again would not help


async def test_system_exit_in_task_code_fails_the_job_not_the_worker(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name)):
        job = await queue.enqueue(task_ref("tests.tasks.exits"))
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=5)
        assert caught.value.exc_type == "builtins.SystemExit"
        assert await (await queue.enqueue(tasks.add, 2, 2)).result(timeout=5) == 4


async def test_malformed_payload_is_moved_aside_with_its_raw_bytes(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    garbage = b"\xff\x00 not a job \x13"
    await queue.redis.hset(keys.job("junk"), mapping={"d": garbage, "s": "queued", "a": 0})
    await queue.redis.lpush(keys.ready, "junk")
    await queue.redis.lpush(keys.ready, "ghost")  # an id with no job at all
    async with running(worker_for(redis_url, queue_name)):
        assert await (await queue.enqueue(tasks.add, 1, 2)).result(timeout=5) == 3
        with anyio.fail_after(10):
            while len(aside := await read_garbage(queue.redis, queue_name)) < 2:
                await anyio.sleep(0.01)  # the quarantine is flushed with the worker's next batch
    by_reason = {a.reason.split(":")[0]: a.key for a in aside}
    assert sorted(by_reason) == ["ready entry names no job", "unreadable payload"]
    kept = await queue.redis.hgetall(by_reason["unreadable payload"])
    assert kept[b"d"] == garbage
    assert await queue.redis.get(by_reason["ready entry names no job"]) == b"ghost"
    assert not await queue.redis.exists(keys.job("junk"))
    stats = await queue.redis.hgetall(keys.stats)
    assert stats[b"quarantined"] == b"2"


async def test_wrong_type_queue_key_is_moved_aside(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.set(keys.ready, b"this should have been a list")
    job = await queue.enqueue(tasks.add, 2, 3)  # the enqueue moves the bad key aside first
    async with running(worker_for(redis_url, queue_name)):
        assert await job.result(timeout=5) == 5
    aside = await queue.redis.zrange(keys.garbage, 0, -1)
    assert len(aside) == 1
    assert await queue.redis.get(aside[0]) == b"this should have been a list"


async def test_wrong_type_job_key_is_moved_aside(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    await queue.redis.set(keys.job("stringy"), b"raw")
    await queue.redis.lpush(keys.ready, "stringy")
    async with running(worker_for(redis_url, queue_name)):
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2
    aside = await queue.redis.zrange(keys.garbage, 0, -1)
    assert [await queue.redis.get(a) for a in aside] == [b"raw"]


async def test_enqueue_to_unreachable_redis_raises_a_typed_error_in_time() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RedisUnavailable):
        async with Queue(url, timeout=0.5) as queue:
            await queue.enqueue(tasks.add, 1, 2)
    assert time.monotonic() - started < 30  # bounded: never hangs


async def test_enqueue_raises_when_redis_goes_away(queue_name: str) -> None:
    server = RedisServer()
    server.start()
    try:
        async with Queue(server.url, name=queue_name, timeout=0.5) as queue:
            await queue.enqueue(tasks.add, 1, 2)
            server.stop()
            with pytest.raises(RedisUnavailable):
                await queue.enqueue(tasks.add, 1, 2)
    finally:
        server.cleanup()


async def test_worker_waits_for_redis_and_recovers(queue_name: str) -> None:
    server = RedisServer(port=free_port())
    url = server.tcp_url
    worker = worker_for(url, queue_name)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)  # Redis is not up yet: the worker retries with backoff
        server.start()
        try:
            async with Queue(url, name=queue_name) as queue:
                assert await (await queue.enqueue(tasks.add, 3, 4)).result(timeout=15) == 7
        finally:
            worker.stop()
            worker.stop()
            server.cleanup()


async def test_hanging_job_is_timed_out_and_the_worker_lives(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name, job_timeout=0.2)):
        hung = await queue.enqueue(tasks.sleepy, 3600)
        with pytest.raises(JobFailed) as caught:
            await hung.result(timeout=10)
        assert "timed out" in caught.value.exc_message
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2
    assert (await hung.info()).status is JobStatus.FAILED


def test_bad_options_are_typed_errors() -> None:
    with pytest.raises(ConfigurationError):
        tasks.add.options(job_id="has space")
    with pytest.raises(ConfigurationError):
        tasks.add.options(delay=1, at=None).options(at=__import__("datetime").datetime.now())
    with pytest.raises(ConfigurationError):
        Queue(name="bad{name}")
    with pytest.raises(ConfigurationError):
        Worker([task_ref("x")])
