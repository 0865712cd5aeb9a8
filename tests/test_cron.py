"""Recurring jobs: tick computation, exactly once per tick across processes,
no_overlap, catch-up, and the schedule table."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from aioqueue import ConfigurationError, JobStatus, Queue, Worker
from aioqueue._protocol.keys import QueueKeys
from aioqueue.cron import CronJob, cron, every, schedule_status, schedule_table
from tests import sched_tasks as st
from tests.conftest import ROOT, running

PARIS = ZoneInfo("Europe/Paris")


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def ticks(entry: CronJob, start: datetime, n: int) -> list[datetime]:
    out, at = [], ms(start)
    for _ in range(n):
        at = entry.next_after(at)
        out.append(datetime.fromtimestamp(at / 1000, entry.timezone))
    return out


def local(dt: datetime) -> str:
    return dt.strftime("%m-%d %H:%M:%S%z")


# -- next fire times (pure) --------------------------------------------------------


def test_fixed_time_runs_once_across_both_dst_changes() -> None:
    entry = cron("30 2 * * *", st.stamp.call("k"), timezone="Europe/Paris")
    # spring forward (29 March 2026): 02:30 does not exist, it fires at 03:00
    spring = ticks(entry, datetime(2026, 3, 28, 12, tzinfo=PARIS), 3)
    assert [local(t) for t in spring] == [
        "03-29 03:00:00+0200",
        "03-30 02:30:00+0200",
        "03-31 02:30:00+0200",
    ]
    # fall back (25 October 2026): 02:30 happens twice, the job runs once
    autumn = ticks(entry, datetime(2026, 10, 24, 12, tzinfo=PARIS), 2)
    assert [local(t) for t in autumn] == ["10-25 02:30:00+0200", "10-26 02:30:00+0100"]


def test_hourly_follows_real_time_through_the_repeated_hour() -> None:
    entry = cron("0 * * * *", st.stamp.call("k"), timezone="Europe/Paris")
    hours = ticks(entry, datetime(2026, 10, 25, 0, 30, tzinfo=PARIS), 4)
    assert [local(t) for t in hours] == [
        "10-25 01:00:00+0200",
        "10-25 02:00:00+0200",
        "10-25 02:00:00+0100",
        "10-25 03:00:00+0100",
    ]
    stamps = [ms(t) for t in hours]  # (aware datetimes in one zone subtract as wall times)
    assert all(b - a == 3_600_000 for a, b in itertools.pairwise(stamps))


def test_seconds_field_latest_tick_and_intervals() -> None:
    entry = cron("*/15 * * * * *", st.stamp.call("k"))
    start = datetime(2026, 1, 1, 12, 0, 7, 250000, tzinfo=UTC)
    assert [t.second for t in ticks(entry, start, 4)] == [15, 30, 45, 0]
    on_tick = ms(datetime(2026, 1, 1, 12, 0, 15, tzinfo=UTC))
    assert entry.latest_at_or_before(on_tick) == on_tick
    assert entry.latest_at_or_before(on_tick - 1) == on_tick - 15_000
    assert entry.next_after(on_tick) == on_tick + 15_000

    half_minute = every(timedelta(seconds=30), st.stamp.call("k"), name="half")
    assert half_minute.next_after(ms(start)) == ms(datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC))
    assert half_minute.latest_at_or_before(ms(start)) == ms(start.replace(second=0, microsecond=0))
    assert half_minute.job_id(1000) == "cron:half:1000"


@pytest.mark.anyio
async def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        cron("61 * * * *", st.stamp.call("k"))
    with pytest.raises(ConfigurationError):
        cron("* * * *", st.stamp.call("k"))
    with pytest.raises(ConfigurationError):
        cron("* * * * *", st.stamp.call("k"), timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError):
        cron("* * * * *", st.stamp.call("k"), name="has space")
    with pytest.raises(ConfigurationError):
        every(0, st.stamp.call("k"))
    twice = [cron("* * * * *", st.stamp.call("a")), cron("0 * * * *", st.stamp.call("b"))]
    with pytest.raises(ConfigurationError, match="names must differ"):
        Worker([st.stamp], cron=twice)


@pytest.mark.anyio  # (a Worker is built inside an event loop)
async def test_schedule_table_lists_next_fire_times() -> None:
    worker = Worker(
        queues=["q1"],
        cron=[
            cron("0 9 * * 1-5", st.stamp.call("k"), timezone="Europe/Paris", name="weekdays"),
            every(60, st.slow_tick.options(queue="q2").call("k", 0.1), no_overlap=True),
        ],
    )
    assert set(worker.tasks) == {st.stamp.name, st.slow_tick.name}  # registered by cron
    now = datetime(2026, 6, 5, 10, 0, 30, tzinfo=UTC)  # a Friday
    weekdays, minutely = schedule_table(worker, now)
    assert weekdays.next_fire == datetime(2026, 6, 8, 9, 0, tzinfo=PARIS)  # Monday
    assert (weekdays.queue, weekdays.schedule, weekdays.timezone) == (
        "q1",
        "0 9 * * 1-5",
        "Europe/Paris",
    )
    assert minutely.next_fire == datetime(2026, 6, 5, 10, 1, tzinfo=UTC)
    assert (minutely.queue, minutely.schedule, minutely.no_overlap) == ("q2", "every 60s", True)


# -- cron_fire, the atomic step ----------------------------------------------------


@pytest.mark.anyio
async def test_cron_fire_once_per_tick_and_never_early(queue: Queue, queue_name: str) -> None:
    keys = QueueKeys(queue_name)
    seconds, _ = await queue.redis.time()
    past, future = (seconds - 10) * 1000, (seconds + 60) * 1000
    fire = queue.scripts.cron_fire

    status, wait = await fire(queue_name, "c", future, f"cron:c:{future}", b"x", "")
    assert status == "early" and 59_000 < wait <= 60_000
    assert (await fire(queue_name, "c", past, f"cron:c:{past}", b"x", ""))[0] == "fired"
    assert (await fire(queue_name, "c", past, f"cron:c:{past}", b"x", ""))[0] == "dup"
    older = past - 1000  # a slower worker's older tick: never fired after a newer one
    assert (await fire(queue_name, "c", older, f"cron:c:{older}", b"x", ""))[0] == "dup"
    assert await queue.redis.hget(keys.cron, "c") == str(past).encode()
    assert await queue.redis.lrange(keys.ready, 0, -1) == [f"cron:c:{past}".encode()]


@pytest.mark.anyio
async def test_no_overlap_skips_ticks_while_the_last_run_runs(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:held"
    entry = cron("* * * * * *", st.solo.call(key), name="held", no_overlap=True)
    payload = _payload(entry)
    seconds, _ = await queue.redis.time()
    tick = [(seconds - 10 + i) * 1000 for i in range(3)]

    async def fire(i: int) -> str:
        status, _ = await queue.scripts.cron_fire(
            queue_name, "held", tick[i], entry.job_id(tick[i]), payload, entry.lock_wire()
        )
        return status

    on_startup, on_shutdown = st.redis_hooks(redis_url)
    worker = Worker([st.solo], redis_url=redis_url, queues=[queue_name], on_startup=[on_startup])
    worker.on_shutdown.append(on_shutdown)
    async with running(worker):
        assert await fire(0) == "fired"
        await queue.redis.blpop([f"{key}:started"], timeout=5)  # first run holds the lock
        assert await fire(1) == "overlap"
        assert not await queue.redis.exists(QueueKeys(queue_name).job(entry.job_id(tick[1])))
        await queue.redis.rpush(f"{key}:go", 1)
        await queue.job(entry.job_id(tick[0])).result(timeout=5)
        assert await fire(2) == "fired"  # released when the run ended
        await queue.redis.rpush(f"{key}:go", 1)
        await queue.job(entry.job_id(tick[2])).result(timeout=5)


def _payload(entry: CronJob) -> bytes:
    from aioqueue._worker.cron_runner import CronRunner
    from aioqueue.serializers import get_serializer

    return CronRunner._payload(entry, get_serializer("msgpack"))


# -- catch-up ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("catch_up", [True, False], ids=["catch_up", "skip"])
async def test_missed_tick_runs_once_on_start_only_with_catch_up(
    queue: Queue, redis_url: str, queue_name: str, catch_up: bool
) -> None:
    key = f"{queue_name}:hourly"
    entry = every(timedelta(hours=1), st.stamp.call(key), name="hourly", catch_up=catch_up)
    seconds, _ = await queue.redis.time()
    now = seconds * 1000
    latest = entry.latest_at_or_before(now)
    # every worker was down: the last tick fired is three hours old
    await queue.redis.hset(QueueKeys(queue_name).cron, "hourly", latest - 3 * 3_600_000)
    on_startup, on_shutdown = st.redis_hooks(redis_url)
    worker = Worker(
        [st.stamp],
        redis_url=redis_url,
        queues=[queue_name],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        cron=[entry],
    )
    async with running(worker):  # returns once the start-up decision is made
        if catch_up:
            await queue.job(entry.job_id(latest)).result(timeout=5)
            assert await queue.redis.hget(f"{key}:runs", entry.job_id(latest)) == b"1"
        fired = int(await queue.redis.hget(QueueKeys(queue_name).cron, "hourly"))  # type: ignore[arg-type]
        table = await schedule_status(worker, queue.redis)
    assert fired == (latest if catch_up else latest - 3 * 3_600_000)
    assert await queue.redis.hlen(f"{key}:runs") == (1 if catch_up else 0)
    assert table[0].next_fire == datetime.fromtimestamp((latest + 3_600_000) / 1000, UTC)
    assert table[0].last_fired == datetime.fromtimestamp(fired / 1000, UTC)


# -- real processes ----------------------------------------------------------------


@pytest.fixture
def cron_processes(redis_url: str, queue_name: str, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "AIOQUEUE_REDIS_URL": redis_url,
            "TEST_QUEUE": queue_name,
            "PYTHONPATH": str(ROOT),
        }
        with open(tmp_path / f"worker-{len(procs)}.log", "wb") as logfile:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.apps_cron"],
                env=env,
                stdout=logfile,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": True})], ids=["uvloop"])
async def test_each_tick_fires_exactly_once_across_three_processes(
    queue: Queue, queue_name: str, cron_processes: Any
) -> None:
    procs = [cron_processes() for _ in range(3)]
    redis = queue.redis
    every_second = f"{queue_name}:every-second"
    with anyio.fail_after(30):
        for _ in procs:
            assert await redis.blpop([f"{queue_name}:up"], timeout=20)
        seen = await redis.llen(f"{every_second}:done")
        # pop what is there, then four more ticks with all three running
        for _ in range(seen + 4):
            assert await redis.blpop([f"{every_second}:done"], timeout=5)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert await anyio.to_thread.run_sync(proc.wait, 15) == 0
    runs = {k.decode(): int(v) for k, v in (await redis.hgetall(f"{every_second}:runs")).items()}
    assert len(runs) >= seen + 4
    assert set(runs.values()) == {1}  # no tick ran twice
    tick_ms = sorted(int(job_id.rsplit(":", 1)[1]) for job_id in runs)
    assert all(b - a == 1000 for a, b in itertools.pairwise(tick_ms)), tick_ms
    last = int(await redis.hget(QueueKeys(queue_name).cron, "every-second"))  # type: ignore[arg-type]
    assert last >= tick_ms[-1]
    # no_overlap: a 1.5 s job fired every second never ran twice at once
    spans = sorted(
        tuple(map(float, s.split())) for s in await redis.lrange(f"{queue_name}:slow:spans", 0, -1)
    )
    assert spans
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans)), spans
    assert int(await redis.hget(QueueKeys(queue_name).stats, "cron_overlap") or 0) >= 1  # type: ignore[arg-type]
    statuses = {await queue.job(job_id).status() for job_id in runs}
    assert statuses == {JobStatus.COMPLETE}
