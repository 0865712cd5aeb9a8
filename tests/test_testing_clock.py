"""aioqueue.testing: run_worker, drain and the test clock, as a user's tests use them.

Every test here runs on the plugin's own private Redis (aioqueue_* fixtures) and
asserts what ran, in which order and at which test-clock time; none sleeps.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from aioqueue import JobNotFound, JobStatus, Queue, Worker, current_job, task
from aioqueue._protocol.keys import QueueKeys
from aioqueue.cron import cron, every
from aioqueue.testing import RunningWorker, TestClock, run_worker

pytestmark = pytest.mark.anyio

MINUTE = 60_000
DAY = 86_400_000

# (what ran, attempt, test-clock ms when it ran)
runs: list[tuple[str, int, int]] = []
CLOCK: list[TestClock] = []


@pytest.fixture(autouse=True)
def _record_runs(aioqueue_clock: TestClock) -> Iterator[None]:
    runs.clear()
    CLOCK[:] = [aioqueue_clock]
    yield
    CLOCK.clear()


def ran(what: str) -> None:
    runs.append((what, current_job().attempt, CLOCK[0].ms))


@task(max_attempts=4, backoff=60, backoff_max=3600)
async def flaky_minutes(fail_times: int) -> str:
    ran("flaky")
    if current_job().attempt <= fail_times:
        raise ConnectionError("upstream down")
    return "done"


@task
async def stamp(name: str) -> str:
    ran(name)
    return name


@task
async def daily_report() -> None:
    ran(current_job().job_id)


@task
async def parent() -> None:
    ran("parent")
    # a child one minute later: it must run before a job due later than it
    async with Queue(CLOCK_URL[0]) as queue:
        await queue.enqueue(stamp.options(delay=60), "child")


CLOCK_URL: list[str] = []


@task(max_attempts=3, backoff=1)
async def fails_twice(n: int) -> int:
    if current_job().attempt <= 2:
        raise RuntimeError(f"attempt {current_job().attempt}")
    return n * 2


@task(result_ttl=60)
async def short_lived() -> int:
    return 7


def worker(**kwargs: object) -> Worker:
    return Worker(
        [flaky_minutes, stamp, daily_report, parent, fails_twice, short_lived],
        **kwargs,  # type: ignore[arg-type]
    )


async def test_retries_with_minutes_of_backoff_run_in_order(
    aioqueue_queue: Queue, aioqueue_clock: TestClock
) -> None:
    start = aioqueue_clock.ms
    async with run_worker(worker()) as w:
        job = await aioqueue_queue.enqueue(flaky_minutes, 3)
        await w.drain()
        assert runs == [("flaky", 1, start)]  # the first retry is half a minute away at least
        assert await job.status() is JobStatus.SCHEDULED
        await aioqueue_clock.advance(minutes=10, fail_fast=True)
        assert await job.result(timeout=5) == "done"
    assert [attempt for _, attempt, _ in runs] == [1, 2, 3, 4]
    times = [at for _, _, at in runs]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # backoff 60 s doubling per attempt, each delay drawn from half to all of it
    for gap, ceiling in zip(gaps, [1 * MINUTE, 2 * MINUTE, 4 * MINUTE], strict=True):
        assert ceiling / 2 <= gap <= ceiling
    assert aioqueue_clock.ms == start + 10 * MINUTE


async def test_a_job_delayed_by_a_day(aioqueue_queue: Queue, aioqueue_clock: TestClock) -> None:
    start = aioqueue_clock.ms
    async with run_worker(worker()):
        job = await aioqueue_queue.enqueue(stamp.options(delay=timedelta(days=1)), "tomorrow")
        await aioqueue_clock.advance(hours=23, minutes=59, seconds=59, milliseconds=999)
        assert runs == []
        assert await job.status() is JobStatus.SCHEDULED
        await aioqueue_clock.advance(milliseconds=1)
        assert runs == [("tomorrow", 1, start + DAY)]
        assert await job.result(timeout=5) == "tomorrow"


async def test_a_daily_cron_at_nine_over_four_days_and_a_delayed_job_between_its_ticks(
    aioqueue_queue: Queue, aioqueue_clock: TestClock
) -> None:
    now = aioqueue_clock.now()
    eight = now.replace(hour=8, minute=0, second=0, microsecond=0)
    if eight <= now:
        eight += timedelta(days=1)
    await aioqueue_clock.advance_to(eight)
    daily = worker(cron=[cron("0 9 * * *", daily_report, name="daily-report")])
    async with run_worker(daily):
        await aioqueue_queue.enqueue(stamp.options(delay=timedelta(hours=24, minutes=30)), "x")
        await aioqueue_clock.advance(days=4)  # one advance: four ticks, one by one
        # the worker's own cron runner fired them: it registered its schedule too
        defined = await aioqueue_queue.redis.hgetall(QueueKeys("default").crondef)
        assert list(defined) == [b"daily-report"]
    nine = [round((eight + timedelta(days=d, hours=1)).timestamp() * 1000) for d in range(4)]
    # one job per tick, with the tick's id, at 09:00 UTC; the delayed job between them
    assert [(what, at) for what, _, at in runs] == [
        (f"cron:daily-report:{nine[0]}", nine[0]),
        ("x", nine[0] + 23 * 3_600_000 + 30 * MINUTE),
        *[(f"cron:daily-report:{tick}", tick) for tick in nine[1:]],
    ]
    assert {datetime.fromtimestamp(t / 1000, UTC).strftime("%H:%M") for t in nine} == {"09:00"}
    assert aioqueue_clock.now() == eight + timedelta(days=4)


async def test_cron_catch_up_fires_the_latest_missed_tick_when_a_worker_starts(
    aioqueue_clock: TestClock,
) -> None:
    hour = 3_600_000
    first_tick = (aioqueue_clock.ms // hour + 1) * hour
    hourly = worker(cron=[every(timedelta(hours=1), stamp.call("tick"), catch_up=True)])
    async with run_worker(hourly):
        await aioqueue_clock.advance(hours=1)
    await aioqueue_clock.advance(hours=3)  # no worker: nothing fires
    assert [(what, at) for what, _, at in runs] == [("tick", first_tick)]
    async with run_worker(hourly) as w:  # 3 ticks were missed: the latest fires, once
        await w.drain()
    assert [(what, at) for what, _, at in runs] == [
        ("tick", first_tick),
        ("tick", aioqueue_clock.ms),
    ]


async def test_what_a_job_schedules_runs_in_its_place_in_the_window(
    aioqueue_redis_url: str, aioqueue_queue: Queue, aioqueue_clock: TestClock
) -> None:
    CLOCK_URL[:] = [aioqueue_redis_url]
    start = aioqueue_clock.ms
    async with run_worker(worker()):
        await aioqueue_queue.enqueue(parent.options(delay=600))
        await aioqueue_queue.enqueue(stamp.options(delay=1200), "later")
        await aioqueue_clock.advance(hours=1)
    assert [(what, at - start) for what, _, at in runs] == [
        ("parent", 10 * MINUTE),
        ("child", 11 * MINUTE),
        ("later", 20 * MINUTE),
    ]


async def test_a_dead_workers_lease_expires_in_the_window(
    aioqueue_redis_url: str, aioqueue_queue: Queue, aioqueue_clock: TestClock
) -> None:
    job = await aioqueue_queue.enqueue(stamp, "rescued")
    # a worker that claims the job and dies: its lease is 30 s on the test clock
    claimed = await aioqueue_queue.scripts.claim("default", 1, "dead-worker", 30_000)
    assert [c.id for c in claimed.jobs] == [job.id]
    start = aioqueue_clock.ms
    async with run_worker(worker()) as w:
        await w.drain()  # the dead worker's delivery is not one to wait for
        assert runs == []
        await aioqueue_clock.advance(seconds=29)
        assert runs == []
        await aioqueue_clock.advance(seconds=1)
        assert runs == [("rescued", 2, start + 30_000)]
    info = await job.info()
    assert info.status is JobStatus.COMPLETE


async def test_a_result_ttl_ends_on_the_test_clock(
    aioqueue_redis_url: str, aioqueue_queue: Queue, aioqueue_clock: TestClock
) -> None:
    async with run_worker(worker()) as w:
        job = await aioqueue_queue.enqueue(short_lived)
        await w.drain()
        assert await job.result(timeout=5) == 7
        # the real TTL is longer than the test's: only the test clock ends it
        pttl = await aioqueue_queue.redis.pttl(QueueKeys("default").job(job.id))
        assert pttl > DAY
        await aioqueue_clock.advance(seconds=59, milliseconds=999)
        assert await job.status() is JobStatus.COMPLETE
        await aioqueue_clock.advance(milliseconds=1)
        with pytest.raises(JobNotFound):
            await job.status()


async def test_drain_fail_fast_reraises_the_task_exception_with_its_traceback(
    aioqueue_queue: Queue,
) -> None:
    @task(max_attempts=2, backoff=0)
    async def charge(amount: int) -> None:
        validate(amount)

    def validate(amount: int) -> None:
        raise ValueError(f"amount {amount} is negative")

    async with run_worker(Worker([charge])) as w:
        job = await aioqueue_queue.enqueue(charge, -5)
        with pytest.raises(ValueError, match="amount -5 is negative") as raised:
            await w.drain(fail_fast=True)
        frames = [entry.name for entry in raised.traceback]
        assert frames.index("charge") < frames.index("validate")  # the task's own frames
        assert await job.status() is JobStatus.FAILED  # dead-lettered as well, after 2 attempts
        await w.drain(fail_fast=True)  # raised once: the next drain is quiet


async def test_drain_without_fail_fast_only_dead_letters(aioqueue_queue: Queue) -> None:
    @task(max_attempts=1)
    async def broken() -> None:
        raise KeyError("x")

    async with run_worker(Worker([broken])) as w:
        job = await aioqueue_queue.enqueue(broken)
        await w.drain()
        assert await job.status() is JobStatus.FAILED


async def test_fail_fast_raises_what_the_worker_stored_when_no_task_raised(
    aioqueue_queue: Queue,
) -> None:
    from aioqueue import JobFailed

    async with run_worker(Worker([stamp])) as w:
        job = await aioqueue_queue.enqueue("no.such.task")
        with pytest.raises(JobFailed, match="UnknownTaskError") as raised:
            await w.drain(fail_fast=True)
        assert raised.value.job_id == job.id


async def test_a_thousand_jobs_with_retries_drain(
    aioqueue_queue: Queue, aioqueue_clock: TestClock
) -> None:
    async with run_worker(worker()):
        began = time.perf_counter()
        jobs = await aioqueue_queue.enqueue_many(fails_twice.call(i) for i in range(1000))
        # two retries each, 0.5-1 s then 1-2 s later: about 2,000 steps of the clock
        await aioqueue_clock.advance(seconds=5, fail_fast=True)
        elapsed = time.perf_counter() - began
        results = [await job.result(timeout=5) for job in jobs]
    assert results == [i * 2 for i in range(1000)]
    stats = await aioqueue_queue.redis.hgetall(QueueKeys("default").stats)
    assert Counter({k.decode(): int(v) for k, v in stats.items()}) >= Counter(
        complete=1000, retried=2000
    )
    print(f"1,000 jobs, 3,000 attempts through clock.advance: {elapsed:.2f}s")  # reported


async def test_the_test_clock_only_moves_forward(aioqueue_clock: TestClock) -> None:
    from aioqueue import ConfigurationError

    with pytest.raises(ConfigurationError):
        await aioqueue_clock.advance(seconds=-1)
    with pytest.raises(ConfigurationError):
        await aioqueue_clock.advance_to(aioqueue_clock.now() - timedelta(seconds=1))


async def test_workers_on_two_queues_settle_together(
    aioqueue_redis_url: str, aioqueue_clock: TestClock
) -> None:
    async with Queue(aioqueue_redis_url, name="emails") as emails:
        async with (
            run_worker(worker(queues=["default"])),
            run_worker(worker(queues=["emails"])) as w,
        ):
            assert isinstance(w, RunningWorker)
            await emails.enqueue(stamp.options(delay=5), "mail")
            await aioqueue_clock.advance(seconds=5)
            assert [what for what, _, _ in runs] == ["mail"]


def test_a_test_leaves_keys_behind(aioqueue_redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(aioqueue_redis_url) as client:
        client.set("left-behind", 1)


def test_the_next_test_starts_with_an_empty_database(aioqueue_redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(aioqueue_redis_url) as client:
        assert [k.decode() for k in client.keys("*")] == ["aq:testing:clock"]
