"""Redis Sentinel (1 primary, 1 replica, 3 sentinels): the core path and a failover."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from aioqueue import ConfigurationError, Queue, Worker
from aioqueue._redis.sentinel import parse_sentinel_url
from tests import tasks
from tests.cluster import LocalSentinel
from tests.conftest import abort_running_sleepy_job, running
from tests.failover import outcomes, run_through_failover

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"use_uvloop": True})


def make_worker(url: str, queue: str, **kwargs: Any) -> Worker:
    return Worker([tasks.add, tasks.sleepy], redis_url=url, queues=[queue], **kwargs)


def test_sentinel_url_forms() -> None:
    sentinels, service, opts, sentinel_opts = parse_sentinel_url(
        "redis+sentinel://:secret@s1:26379,s2:26380/mymaster/2?sentinel_password=x"
    )
    assert sentinels == [("s1", 26379), ("s2", 26380)]
    assert service == "mymaster"
    assert opts == {"db": 2, "username": None, "password": "secret"}
    assert sentinel_opts == {"password": "x"}
    assert parse_sentinel_url("rediss+sentinel://s:1/m")[2] == {"db": 0, "ssl": True}
    for bad in ("redis+sentinel://s:1", "redis+sentinel://s:1/m/x", "redis+sentinel://s/m"):
        with pytest.raises(ConfigurationError):
            parse_sentinel_url(bad)


async def test_round_trip_abort_and_durable_enqueue(redis_sentinel: LocalSentinel) -> None:
    url = redis_sentinel.url
    name = f"s-{secrets.token_hex(4)}"
    async with (
        Queue(url, name=name, durable=True) as queue,
        running(make_worker(url, name)),
    ):
        assert await (await queue.enqueue(tasks.add, 2, 3)).result(timeout=5) == 5
        await abort_running_sleepy_job(queue)


async def test_primary_killed_mid_run_workers_and_clients_follow(
    redis_sentinel: LocalSentinel,
) -> None:
    """SIGKILL the monitored primary while jobs flow: the sentinels promote the
    replica, the worker and both clients follow. No durable enqueue that returned
    is lost; plain ones acknowledged just before the kill may be."""
    url = redis_sentinel.url
    name = f"s-{secrets.token_hex(4)}"
    primary = redis_sentinel.primary()
    try:
        async with (
            Queue(url, name=name, timeout=2) as plain,
            Queue(url, name=name, timeout=2, durable=True) as durable,
            running(make_worker(url, name, lease=2)),
        ):
            plain_run, durable_run = await run_through_failover(
                [plain, durable], primary.kill, redis_sentinel.heal
            )
            assert redis_sentinel.primary() is not primary
            _, lost = await outcomes(durable_run.before + durable_run.after, 30)
            assert lost == 0, f"{lost} durable jobs lost"
            _, lost = await outcomes(plain_run.after, 30)
            assert lost == 0
            _, plain_lost = await outcomes(plain_run.before, 30)
            print(
                f"plain: {len(plain_run.before)} acked before the kill, {plain_lost} lost;"
                f" durable: {len(durable_run.before)} before, 0 lost"
            )
    finally:
        redis_sentinel.heal()
