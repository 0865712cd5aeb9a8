"""Stable error codes stored beside exc_type for the failures aioqueue decides
(issue #13): a stored record must not depend on an internal module path."""

from __future__ import annotations

import msgspec
import pytest

from aioqueue import JobAborted, JobFailed, JobTimedOut, Queue, Worker
from aioqueue._protocol.codes import CODES
from aioqueue._protocol.envelope import ErrorInfo, decode_error
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio


async def failure(job: object) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        await job.result(timeout=5)  # type: ignore[attr-defined]
    return caught.value


async def test_each_failure_aioqueue_decides_stores_its_code(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    worker = Worker(
        [tasks.boom, tasks.echo, tasks.sleepy],
        redis_url=redis_url,
        queues=[queue_name],
        max_result_size=64,
    )
    async with Queue(redis_url, name=queue_name, serializer="json") as other:
        async with running(worker):
            raised = await failure(await queue.enqueue(tasks.boom, "mine"))
            unknown = await failure(await queue.enqueue("tests.tasks.nothing_here"))
            big = await failure(await queue.enqueue(tasks.echo, "x" * 1000))
            undecodable = await failure(await other.enqueue(tasks.echo, "json, not msgpack"))
            slow = await failure(await queue.enqueue(tasks.sleepy.options(timeout=0.05), 5))
            queued = await queue.enqueue(tasks.echo.options(delay=3600), "later")
            assert await queued.abort()
            with pytest.raises(JobAborted) as aborted:
                await queued.result(timeout=5)
    assert raised.code == ""  # the task's own error: its type says it all
    assert raised.exc_type == "builtins.ValueError"
    assert unknown.code == "unknown_task"
    assert big.code == "result_too_large"
    assert undecodable.code == "bad_arguments"
    assert isinstance(slow, JobTimedOut) and slow.code == "timeout"
    # aborted while scheduled: the Lua library writes the record
    assert aborted.value.code == "aborted"
    for code in (unknown.code, big.code, undecodable.code, slow.code, aborted.value.code):
        assert code in CODES


def test_a_record_written_before_codes_existed_reads_with_no_code() -> None:
    old = msgspec.msgpack.encode(["aioqueue.executor.WorkerLost", "lost 3 times", "tb", False])
    info = decode_error(old)
    assert info == ErrorInfo("aioqueue.executor.WorkerLost", "lost 3 times", "tb", False, "")
