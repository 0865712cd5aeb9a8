"""Nothing aioqueue.testing's clock does reaches a production worker.

- A worker not started by ``run_worker`` refuses a Redis that runs the testing
  build (its function names are the production ones there).
- The production library never reads the test clock: a clock key (and a
  drive, as a waiting ``advance`` writes it) put into a production Redis
  changes no due time, wait or cron tick, and moves nothing.
- The testing build routes every call it must (a new time or TTL command in the
  production source fails the build), and the plugin names the missing binary
  in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from aioqueue import ConfigurationError, Queue, Worker, task
from aioqueue._protocol.functions import LIBRARY, TESTING_CLOCK, TESTING_LIBRARY, Scripts
from aioqueue.testing import run_worker
from aioqueue.testing._build import CLOCK_KEY, DRIVE_KEY, SETTLED_KEY, TEST_LIBRARY, build

pytestmark = pytest.mark.anyio

DAY = 86_400_000
ROOT = Path(__file__).resolve().parent.parent


@task
async def noop() -> None:
    return None


async def test_a_production_worker_refuses_the_testing_clock(aioqueue_redis_url: str) -> None:
    worker = Worker([noop], redis_url=aioqueue_redis_url)

    async def start() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            worker.stop()  # only reached when the worker runs: the test then fails
            worker.stop()
            pytest.fail("a production worker ran on the testing clock")

    with pytest.raises(ExceptionGroup) as refused:
        await start()
    assert refused.group_contains(
        ConfigurationError, match=r"aioqueue\.testing's clock .*run_worker"
    )


async def test_run_worker_does_not_leave_the_opt_in_behind(aioqueue_redis_url: str) -> None:
    assert TESTING_CLOCK.get() is False
    async with run_worker(Worker([noop])):
        assert TESTING_CLOCK.get() is False  # set in the worker's own context only
    with pytest.raises(ConfigurationError, match="testing"):
        with anyio.fail_after(10):
            await Worker([noop], redis_url=aioqueue_redis_url).run()


async def test_the_production_library_ignores_a_test_clock_key(redis_url: str) -> None:
    """On the suite's production Redis: a clock key two days ahead changes nothing."""
    import redis.asyncio as aioredis

    queue_name = f"guard-{os.getpid()}"
    async with Queue(redis_url, name=queue_name) as queue:
        client = aioredis.Redis.from_url(redis_url)
        try:
            real_us = int(time.time() * 1_000_000)
            await client.set(CLOCK_KEY, real_us + 2 * DAY * 1000)
            # and a drive towards two days ahead, as a waiting advance leaves it
            await client.set(DRIVE_KEY, drive(queue_name, real_us // 1000 + 2 * DAY))
            job = await queue.enqueue(noop.options(delay=3600))
            scripts = Scripts(client)
            claimed = await scripts.claim(queue_name, 10, "w", 30_000)
            assert claimed.jobs == []
            assert 3_500_000 < claimed.wait_ms <= 3_600_000  # due in an hour of real time
            status, ms = await scripts.cron_fire(
                queue_name, "c", int(time.time() * 1000) + 3_600_000, "cron:c:1", b"x", ""
            )
            assert status == "early" and ms > 3_500_000
            assert (await job.info()).status == "scheduled"
            # nothing drove: the clock key and the drive are as written, nothing signalled
            assert int(await client.get(CLOCK_KEY)) == real_us + 2 * DAY * 1000
            assert await client.get(DRIVE_KEY) is not None
            assert await client.exists(SETTLED_KEY) == 0
        finally:
            await client.delete(CLOCK_KEY, DRIVE_KEY)
            await client.aclose()


def drive(queue: str, target_ms: int) -> str:
    st = {"p": [f"aq:{{{queue}}}:"], "t": str(target_ms), "c": "-1", "f": False, "w": [], "d": []}
    return json.dumps(st)


def test_the_production_library_has_no_test_clock() -> None:
    assert "aq:testing" not in LIBRARY and "aqt_" not in LIBRARY
    assert LIBRARY.startswith("#!lua name=aioqueue_") and TESTING_LIBRARY not in LIBRARY
    # the testing build: the same function names under its own library name
    assert TEST_LIBRARY.startswith(f"#!lua name={TESTING_LIBRARY}\n")
    production_names = sorted(line for line in LIBRARY.splitlines() if "register(" in line)
    assert production_names
    assert all(line in TEST_LIBRARY for line in production_names)
    # every call of the production source goes through the clock (one more: its definition)
    assert TEST_LIBRARY.count("aqt_call(") == LIBRARY.count("redis.call(") + 1
    assert TEST_LIBRARY.count("aqt_pcall(") == LIBRARY.count("redis.pcall(") + 1
    # and every Function it registers ends with the clock's drive (prelude.lua)
    assert LIBRARY.count("redis.register_function") >= 1
    assert TEST_LIBRARY.count("aqt_register_function{") == LIBRARY.count("redis.register_function")


def test_a_time_or_ttl_command_the_build_does_not_route_fails_it() -> None:
    for line in (
        "redis.call('PSETEX', k, 10, v)",
        "redis.pcall('SETEX', k, 10, v)",
        "redis.call('PEXPIREAT', k, 10)",
        "local ttl = redis.call('PTTL', k)",
    ):
        with pytest.raises(RuntimeError, match="does not handle"):
            build(LIBRARY + "\n" + line + "\n")


def test_a_missing_redis_server_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(aioqueue_redis_url):\n    pass\n")
    env = {
        **os.environ,
        "PATH": str(tmp_path),
        "AIOQUEUE_REDIS_SERVER": "",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "aioqueue.testing", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "redis-server not found" in line]
    assert lines, proc.stdout
    assert "Traceback" not in proc.stdout
    assert "install Redis" in lines[0] and "AIOQUEUE_REDIS_SERVER" in lines[0]


def test_aioqueue_run_refuses_a_redis_that_holds_the_test_build() -> None:
    """The test build loaded into a Redis of its own, then the production
    command on it: it exits at start, saying why, and claims nothing."""
    import redis as sync_redis

    from aioqueue._protocol.keys import QueueKeys
    from tests.redis_server import RedisServer

    server = RedisServer()
    server.start()
    try:
        with sync_redis.Redis.from_url(server.url) as client:
            client.function_load(TEST_LIBRARY)
            client.rpush(QueueKeys("default").ready, "some-job")
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "aioqueue",
                    "run",
                    "tests.apps:worker",
                    "--processes",
                    "0",
                    "--burst",
                    "--redis-url",
                    server.url,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "TEST_QUEUE": "default"},
            )
            assert proc.returncode != 0, proc.stdout + proc.stderr
            assert "aioqueue.testing's clock" in proc.stdout + proc.stderr
            assert client.lrange(QueueKeys("default").ready, 0, -1) == [b"some-job"]
    finally:
        server.cleanup()
