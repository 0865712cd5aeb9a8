"""The core path: enqueue → Redis → worker → result, with its failure modes."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import (
    JobAborted,
    JobFailed,
    JobNotFound,
    JobStatus,
    JobTimedOut,
    Queue,
    ResultTimeout,
    Worker,
    task,
)
from aioqueue._protocol.keys import QueueKeys
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio


def make_worker(redis_url: str, queue_name: str, *extra: object, **kwargs: object) -> Worker:
    all_tasks = [
        tasks.add,
        tasks.multiply,
        tasks.echo,
        tasks.boom,
        tasks.flaky,
        tasks.asks_retry,
        tasks.sleepy,
        tasks.exits,
        tasks.whoami,
        tasks.blocking_sleep,
        tasks.signal_and_sleep,
        *extra,
    ]
    return Worker(all_tasks, redis_url=redis_url, queues=[queue_name], **kwargs)  # type: ignore[arg-type]


async def test_result_round_trip_async_and_sync(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        assert await (await queue.enqueue(tasks.add, 2, 3)).result(timeout=5) == 5
        assert await (await queue.enqueue(tasks.multiply, 4, 5)).result(timeout=5) == 20
        value = {"nested": [1, 2.5, "x", None, True], "bytes": b"\x00\xff"}
        assert await (await queue.enqueue(tasks.echo, value)).result(timeout=5) == value


async def test_enqueue_by_name_from_a_producer_without_the_code(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue("tests.tasks.add", 40, 2)
        assert await job.result(timeout=5) == 42


async def test_failure_carries_remote_type_message_and_traceback(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.boom, "kaput")
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=5)
    err = caught.value
    assert err.exc_type == "builtins.ValueError"
    assert err.exc_message == "kaput"
    assert "raise ValueError(message)" in err.remote_traceback
    assert err.job_id == job.id
    info = await job.info()
    assert info.status is JobStatus.FAILED
    assert info.error is not None and info.error.type == "builtins.ValueError"


async def test_dedupe_by_job_id_returns_the_existing_job(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    first = await queue.enqueue(tasks.add.options(job_id="only-once"), 1, 1)
    second = await queue.enqueue(tasks.add.options(job_id="only-once"), 5, 5)
    assert first.created and not second.created
    assert second.id == first.id
    async with running(make_worker(redis_url, queue_name)):
        assert await first.result(timeout=5) == 2
        third = await queue.enqueue(tasks.add.options(job_id="only-once"), 7, 7)
        assert not third.created  # the result is still kept
        assert await third.result(timeout=5) == 2
    ready = await queue.redis.llen(QueueKeys(queue_name).ready)
    assert ready == 0


async def test_one_id_twice_in_one_call_stores_the_first_job_only(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    # the Function checks all ids of a call at once; an id repeated within the
    # call, or one already taken, has each job looked at on its own
    taken = await queue.enqueue(tasks.add.options(job_id="taken"), 0, 0)
    jobs = await queue.enqueue_many(
        [
            tasks.add.options(job_id="twice").call(1, 1),
            tasks.add.call(2, 2),
            tasks.add.options(job_id="twice").call(5, 5),
            tasks.add.options(job_id="taken").call(7, 7),
        ]
    )
    assert [j.created for j in jobs] == [True, True, False, False]
    assert jobs[2].id == jobs[0].id and jobs[3].id == taken.id
    assert await queue.redis.llen(QueueKeys(queue_name).ready) == 3
    async with running(make_worker(redis_url, queue_name)):
        assert [await j.result(timeout=5) for j in jobs] == [2, 4, 2, 0]


async def test_bulk_enqueue_one_round_trip(queue: Queue, redis_url: str, queue_name: str) -> None:
    calls = [tasks.add.call(i, i) for i in range(500)]
    jobs = await queue.enqueue_many(calls)
    assert len(jobs) == 500 and all(j.created for j in jobs)
    assert await queue.redis.llen(QueueKeys(queue_name).ready) == 500
    async with running(make_worker(redis_url, queue_name)):
        results = [await j.result(timeout=10) for j in jobs]
    assert results == [2 * i for i in range(500)]


async def test_bulk_enqueue_across_queues(queue: Queue, redis_url: str, queue_name: str) -> None:
    other = queue_name + "-b"
    jobs = await queue.enqueue_many(
        [tasks.add.call(1, 2), tasks.add.options(queue=other).call(3, 4), tasks.add.call(5, 6)]
    )
    assert [j.queue for j in jobs] == [queue_name, other, queue_name]
    worker = make_worker(redis_url, queue_name)
    worker.set_queues([queue_name, other])
    async with running(worker):
        assert [await j.result(timeout=5) for j in jobs] == [3, 7, 11]


async def test_timeout_fails_the_job(queue: Queue, redis_url: str, queue_name: str) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.sleepy.options(timeout=0.1), 30)
        with pytest.raises(JobTimedOut) as caught:
            await job.result(timeout=10)
    assert caught.value.exc_type == "builtins.TimeoutError"


async def test_retry_with_backoff_then_success(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.flaky, 2)
        assert await job.result(timeout=10) == 3
    info = await job.info()
    assert info.attempts == 3 and info.status is JobStatus.COMPLETE


async def test_retries_exhausted_go_to_dead_letter_with_args_and_error(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.flaky, 10)
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=10)
    assert "attempt 3 fails" in caught.value.exc_message
    keys = QueueKeys(queue_name)
    assert await queue.redis.zscore(keys.dead, job.id) is not None
    info = await job.info()
    assert info.attempts == 3
    assert info.args == (10,) and info.task == "tests.tasks.flaky"
    assert info.error is not None and "RuntimeError" in info.error.traceback


async def test_task_can_ask_for_retry_with_its_own_delay(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.asks_retry)
        assert await job.result(timeout=10) == 2


async def test_abort_queued_job(queue: Queue, redis_url: str, queue_name: str) -> None:
    job = await queue.enqueue(tasks.add, 1, 2)
    assert await job.abort()
    assert await job.status() is JobStatus.ABORTED
    with pytest.raises(JobAborted):
        await job.result(timeout=5)
    async with running(make_worker(redis_url, queue_name)):
        marker = await queue.enqueue(tasks.add, 0, 0)
        assert await marker.result(timeout=5) == 0
    assert await job.status() is JobStatus.ABORTED  # the worker skipped it


async def test_abort_running_job_cancels_it_in_the_worker(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:started"
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.signal_and_sleep, redis_url, key, 60)
        await queue.redis.blpop([key], timeout=10)
        assert await job.abort()
        with pytest.raises(JobAborted):
            await job.result(timeout=10)
    assert await job.status() is JobStatus.ABORTED


async def test_abort_of_finished_job_is_refused(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.add, 1, 1)
        await job.result(timeout=5)
    assert not await job.abort()


async def test_result_timeout_and_missing_job(queue: Queue) -> None:
    job = await queue.enqueue(tasks.add, 1, 1)  # no worker
    with pytest.raises(ResultTimeout):
        await job.result(timeout=0.05)
    with pytest.raises(JobNotFound):
        await queue.job("no-such-job").result(timeout=1)


async def test_result_not_stored_still_reaches_waiters(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    # only a client already waiting when the job ends sees it: wait first, then run
    job = await queue.enqueue(tasks.add.options(result_ttl=0), 20, 1)
    results: list[int] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            results.append(await job.result(timeout=5))
            done.set()

        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()  # its watch is sent
        await job.status()  # behind the watch on the Queue's connection: it is registered
        async with running(make_worker(redis_url, queue_name)):
            with anyio.fail_after(5):
                await done.wait()
    assert results == [21]
    assert not await queue.redis.exists(QueueKeys(queue_name).job(job.id))


async def test_result_expires_after_its_ttl(queue: Queue, redis_url: str, queue_name: str) -> None:
    async with running(make_worker(redis_url, queue_name)):
        job = await queue.enqueue(tasks.add.options(result_ttl=30), 1, 1)
        await job.result(timeout=5)
    ttl = await queue.redis.pttl(QueueKeys(queue_name).job(job.id))
    assert 0 < ttl <= 30_000


async def test_job_info_through_its_states(queue: Queue, redis_url: str, queue_name: str) -> None:
    key = f"{queue_name}:started"
    job = await queue.enqueue(tasks.signal_and_sleep, redis_url, key, 0.2)
    info = await job.info()
    assert info.status is JobStatus.QUEUED and info.attempts == 0 and info.enqueued_at is not None
    worker = make_worker(redis_url, queue_name)
    async with running(worker):
        await queue.redis.blpop([key], timeout=10)
        info = await job.info()
        assert info.status is JobStatus.ACTIVE and info.worker == worker.id and info.attempts == 1
        await job.result(timeout=5)
    info = await job.info()
    assert info.status is JobStatus.COMPLETE and info.ended_at is not None
    assert info.started_at is not None and info.enqueued_at is not None
    assert info.enqueued_at <= info.started_at <= info.ended_at


async def test_delayed_job_is_scheduled_then_runs(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    job = await queue.enqueue(tasks.add.options(delay=0.3), 1, 2)
    info = await job.info()
    assert info.status is JobStatus.SCHEDULED and info.due_at is not None
    async with running(make_worker(redis_url, queue_name)):
        assert await job.result(timeout=5) == 3


async def test_job_context_and_startup_state(queue: Queue, redis_url: str, queue_name: str) -> None:
    @task(name="tests.uses_state")
    async def uses_state() -> str:
        from aioqueue import current_job

        return str(current_job().state["greeting"])

    async def startup(state: dict[str, object]) -> None:
        state["greeting"] = "hello"

    shut: list[bool] = []

    async def shutdown(state: dict[str, object]) -> None:
        shut.append(state["greeting"] == "hello")

    worker = make_worker(
        redis_url, queue_name, uses_state, on_startup=[startup], on_shutdown=[shutdown]
    )
    async with running(worker):
        assert await (await queue.enqueue(uses_state)).result(timeout=5) == "hello"
        ctx = await (await queue.enqueue(tasks.whoami)).result(timeout=5)
    assert ctx["queue"] == queue_name and ctx["attempt"] == 1 and ctx["worker"] == worker.id
    assert shut == [True]


async def test_queues_are_served_in_priority_order(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    high, low = queue_name + "-high", queue_name + "-low"
    low_jobs = await queue.enqueue_many(tasks.whoami.options(queue=low).call() for _ in range(20))
    high_jobs = await queue.enqueue_many(tasks.whoami.options(queue=high).call() for _ in range(20))
    worker = make_worker(redis_url, queue_name, concurrency=1)
    worker.set_queues([high, low])
    async with running(worker):
        for j in low_jobs + high_jobs:
            await j.result(timeout=10)
    started_high = max([(await j.info()).started_at for j in high_jobs])  # type: ignore[type-var]
    started_low = min([(await j.info()).started_at for j in low_jobs])  # type: ignore[type-var]
    assert started_high <= started_low


async def test_concurrency_limit_is_respected(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    peak = 0
    now = 0

    @task(name="tests.counted")
    async def counted() -> None:
        nonlocal peak, now
        now += 1
        peak = max(peak, now)
        await anyio.sleep(0.01)
        now -= 1

    jobs = await queue.enqueue_many(counted.call() for _ in range(60))
    async with running(make_worker(redis_url, queue_name, counted, concurrency=7)):
        for j in jobs:
            await j.result(timeout=10)
    assert peak == 7


async def test_thousands_of_concurrent_waiters_see_every_completion(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    jobs = await queue.enqueue_many(tasks.add.call(i, 1) for i in range(3000))
    results: dict[str, int] = {}

    async def wait(job: object) -> None:
        results[job.id] = await job.result(timeout=30)  # type: ignore[attr-defined]

    async with running(make_worker(redis_url, queue_name, concurrency=200)):
        async with anyio.create_task_group() as tg:
            for j in jobs:
                tg.start_soon(wait, j)
    assert results == {j.id: i + 1 for i, j in enumerate(jobs)}


async def test_two_clients_await_the_same_job(redis_url: str, queue_name: str) -> None:
    async with Queue(redis_url, name=queue_name) as a, Queue(redis_url, name=queue_name) as b:
        job = await a.enqueue(tasks.sleepy, 0.05)
        async with running(make_worker(redis_url, queue_name)):
            async with anyio.create_task_group() as tg:
                out: list[str] = []

                async def wait(q: Queue) -> None:
                    out.append(await q.job(job.id).result(timeout=5))

                tg.start_soon(wait, a)
                tg.start_soon(wait, b)
        assert out == ["slept", "slept"]


async def test_sync_task_runs_in_a_thread_without_blocking_the_loop(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(make_worker(redis_url, queue_name)):
        slow = await queue.enqueue(tasks.blocking_sleep, 0.5)
        fast = await queue.enqueue(tasks.add, 1, 1)
        assert await fast.result(timeout=5) == 2
        assert await slow.status() is JobStatus.ACTIVE  # the loop ran `fast` meanwhile
        assert await slow.result(timeout=5) == "done"


async def test_redis_restart_functions_reloaded(redis_url: str, queue_name: str) -> None:
    async with Queue(redis_url, name=queue_name) as queue:
        client = aioredis.from_url(redis_url)
        try:
            await client.function_flush()
        finally:
            await client.aclose()
        job = await queue.enqueue(tasks.add, 1, 1)  # reloads the library on "Function not found"
        async with running(make_worker(redis_url, queue_name)):
            assert await job.result(timeout=5) == 2


async def test_library_lost_under_merged_enqueues_is_reloaded(
    redis_url: str, queue_name: str
) -> None:
    # the queue is in use (its enqueues take the merged path, awaited by the caller):
    # "Function not found" then reaches each caller's first try, and the full path
    # reloads the library and sends each job again
    async with Queue(redis_url, name=queue_name) as queue:
        await queue.enqueue(tasks.add, 0, 0)
        client = aioredis.from_url(redis_url)
        try:
            await client.function_flush()
            stats = await client.info("commandstats")
            before = stats.get("cmdstat_function|load", {}).get("calls", 0)
            jobs = await asyncio.gather(*(queue.enqueue(tasks.add, i, 1) for i in range(50)))
            after = (await client.info("commandstats"))["cmdstat_function|load"]["calls"]
        finally:
            await client.aclose()
        assert all(job.created for job in jobs)
        assert after > before
        async with running(make_worker(redis_url, queue_name)):
            assert [await job.result(timeout=5) for job in jobs] == [i + 1 for i in range(50)]
