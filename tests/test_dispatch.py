"""Fair dispatch in the claim Function and in one worker: CPU-bound jobs are taken
only into free CPU slots, the rest wait aside in order, I/O-bound jobs pass."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import Queue, QueueFull, Worker, task
from aioqueue._protocol.functions import Claimed
from aioqueue._protocol.keys import QueueKeys
from aioqueue._worker import fetch
from aioqueue.admin import Admin
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio

CPU = tasks.multiply.name  # a plain def: CPU-bound by default
LEASE = 30_000


async def claim(
    queue: Queue, name: str, worker: str, cpu_free: int, cpu: tuple[str, ...] = (CPU,), n: int = 10
) -> list[Claimed]:
    reply = await queue.scripts.claim(name, n, worker, LEASE, cpu_free=cpu_free, cpu_tasks=cpu)
    return reply.jobs


async def test_claim_takes_cpu_jobs_only_into_free_slots_and_keeps_the_rest_in_order(
    queue: Queue, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    kinds = "CICICI"
    calls = [
        tasks.multiply.call(i, 1) if kind == "C" else tasks.add.call(i, 0)
        for i, kind in enumerate(kinds)
    ]
    ids = [job.id for job in await queue.enqueue_many(calls)]
    c1, i1, c2, i2, c3, i3 = ids

    first = await claim(queue, queue_name, "w1", cpu_free=1)
    assert [(j.id, j.cpu) for j in first] == [(c1, True), (i1, False), (i2, False), (i3, False)]
    assert await queue.redis.llen(keys.ready) == 0
    assert await queue.redis.lrange(keys.cpu, 0, -1) == [c3.encode(), c2.encode()]  # tail first
    assert await queue.redis.llen(keys.cwake) == 1  # idle workers with a free slot: wake up
    assert await queue.redis.exists(keys.wake) == 0

    assert await claim(queue, queue_name, "w2", cpu_free=0) == []  # no free slot: nothing
    assert [(j.id, j.cpu) for j in await claim(queue, queue_name, "w3", cpu_free=1)] == [(c2, True)]
    assert await queue.redis.llen(keys.cwake) == 1
    # a worker that counts no task as CPU-bound takes them as it would any job
    assert [(j.id, j.cpu) for j in await claim(queue, queue_name, "w4", 1, cpu=())] == [(c3, False)]
    assert await queue.redis.exists(keys.cpu, keys.cwake) == 0
    admin = Admin(queue.url)
    async with admin:
        assert (await admin.queue(queue_name)).active == 6


async def test_claim_takes_a_cpu_job_only_where_it_starts_at_once(
    queue: Queue, queue_name: str
) -> None:
    i1, i2, c1, i3 = [
        job.id
        for job in await queue.enqueue_many(
            [
                tasks.add.call(1, 1),
                tasks.add.call(2, 2),
                tasks.multiply.call(3, 3),
                tasks.add.call(4, 4),
            ]
        )
    ]
    # room for two jobs to start now (the worker holds others): the CPU job would
    # wait in line behind i1 and i2, so it stays for a worker that can run it now
    got = (
        await queue.scripts.claim(
            queue_name, 10, "w", LEASE, cpu_free=1, cpu_tasks=(CPU,), run_free=2
        )
    ).jobs
    assert [j.id for j in got] == [i1, i2, i3]
    assert await queue.redis.lrange(QueueKeys(queue_name).cpu, 0, -1) == [c1.encode()]


async def test_kinds_come_from_the_workers_names_whoever_enqueued(
    redis_url: str, queue_name: str
) -> None:
    long_name = "tests.some.rather.deeply.nested.module.path." + "x" * 300  # str 16 in msgpack
    mid_name = "tests.tasks.a_name_of_more_than_31_chars"  # str 8
    signed = Queue(redis_url, name=queue_name, signing_key="k")
    async with signed, Queue(redis_url, name=queue_name) as plain:
        await plain.enqueue("tests.tasks.multiply", 2, 3)  # by name: no Task object here
        await signed.enqueue(tasks.multiply, 2, 3)
        await plain.enqueue(mid_name)
        await plain.enqueue(long_name)
        await plain.redis.hset(
            QueueKeys(queue_name).job("junk"), mapping={"d": b"\x93\x01", "s": "queued"}
        )
        await plain.redis.lpush(QueueKeys(queue_name).ready, "junk")
        got = await claim(plain, queue_name, "w", cpu_free=0, cpu=(CPU, mid_name, long_name))
        assert [j.id for j in got] == ["junk"]  # unreadable: not a CPU job, the worker decides
        assert await plain.redis.llen(QueueKeys(queue_name).cpu) == 4


async def test_jobs_moved_aside_count_for_max_length_and_info(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(redis_url, name=queue_name, max_length=3) as queue, Admin(redis_url) as admin:
        await queue.enqueue_many(tasks.multiply.call(i, i) for i in range(3))
        assert await claim(queue, queue_name, "w", cpu_free=0) == []
        assert await queue.redis.llen(QueueKeys(queue_name).cpu) == 3
        assert (await admin.queue(queue_name)).queued == 3
        with pytest.raises(QueueFull):
            await queue.enqueue(tasks.add, 1, 1)


@pytest.fixture
def gates() -> Iterator[None]:
    yield
    for event in tasks.GATES.values():
        event.set()  # no thread of a failed test waits on
    tasks.GATES.clear()
    tasks.STARTED.clear()


async def test_one_worker_holds_one_cpu_job_and_io_jobs_pass_it(
    queue: Queue, redis_url: str, queue_name: str, gates: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an idle worker looks at its queues only when woken: a missed wake-up hangs the test
    monkeypatch.setattr(fetch, "IDLE_WAIT", 3600.0)
    keys = QueueKeys(queue_name)
    worker = Worker([tasks.gated, tasks.add], redis_url=redis_url, queues=[queue_name])
    async with running(worker):
        cpu_jobs = await queue.enqueue_many(tasks.gated.call(queue_name, i) for i in range(3))
        assert await anyio.to_thread.run_sync(tasks.started(queue_name).wait, 10)
        # one claim took the three: one to run, two moved aside
        assert await queue.redis.llen(keys.cpu) == 2
        # I/O jobs enqueued while the worker blocks with its only CPU slot taken run at once
        io_jobs = await queue.enqueue_many(tasks.add.call(i, i) for i in range(50))
        assert [await j.result(timeout=10) for j in io_jobs] == [2 * i for i in range(50)]
        assert await queue.redis.llen(keys.cpu) == 2
        assert [await j.status() for j in cpu_jobs].count("active") == 1
        for i in range(3):  # each end frees the slot: the worker wakes itself for the next
            tasks.gate(f"{queue_name}-{i}").set()
        assert sorted([await j.result(timeout=10) for j in cpu_jobs]) == [0, 1, 2]
    assert await queue.redis.exists(keys.cpu, keys.cwake, keys.nudge(worker.id)) == 0


async def test_a_worker_with_no_cpu_tasks_runs_jobs_others_moved_aside(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    await queue.enqueue_many(tasks.multiply.call(i, 2) for i in range(5))
    assert len(await claim(queue, queue_name, "gone", cpu_free=0)) == 0  # all moved aside

    @task(name=CPU, cpu=False)
    def multiply(a: int, b: int) -> int:  # this deploy says: not CPU-bound
        return a * b

    ids = [i.decode() for i in await queue.redis.lrange(QueueKeys(queue_name).cpu, 0, -1)]
    async with running(Worker([multiply], redis_url=redis_url, queues=[queue_name])):
        assert sorted([await queue.job(i).result(timeout=10) for i in ids]) == [0, 2, 4, 6, 8]


async def test_io_jobs_ending_on_a_busy_worker_do_not_make_it_claim_each_time(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    """A worker with every consumer busy blocks without cwake; an I/O job's end
    frees a consumer, but with no CPU job seen waiting it has no reason to claim."""
    worker = Worker(
        [tasks.add, tasks.sleepy, tasks.multiply], redis_url=redis_url, queues=[queue_name]
    )
    worker.configure(concurrency=10)
    client = aioredis.from_url(redis_url, socket_timeout=None)
    commands: list[str] = []
    try:
        async with running(worker):
            warm = await queue.enqueue_many(tasks.add.call(i, i) for i in range(20))
            for job in warm:
                await job.result(timeout=10)  # short jobs measured: prefetch is on
            async with client.monitor() as monitor:

                async def watch() -> None:
                    async for entry in monitor.listen():
                        if entry["client_type"] != "lua":
                            commands.append(entry["command"])

                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    slow = await queue.enqueue_many(tasks.sleepy.call(0.2) for _ in range(10))
                    assert [await j.result(timeout=10) for j in slow] == ["slept"] * 10
                    tg.cancel_scope.cancel()
    finally:
        await client.aclose()
    nudge = QueueKeys(queue_name).nudge(worker.id)
    assert not [c for c in commands if c.startswith("RPUSH") and nudge in c], commands
    claims = [c for c in commands if c.startswith("FCALL") and "_claim" in c.split(" ")[1]]
    assert len(claims) <= 3, claims  # the claim on the wake-up, and the one that found none
