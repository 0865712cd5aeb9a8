"""Worker processes killed and stopped for real: nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess

import anyio
import pytest

from aioqueue import JobStatus, Queue
from aioqueue._protocol.keys import QueueKeys
from tests import tasks

pytestmark = pytest.mark.anyio


async def wait_started(queue: Queue, key: str) -> tuple[int, int]:
    """Blocks until a signal_and_sleep job reports its start; returns (pid, attempt)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(queue.url, socket_timeout=None)
    try:
        got = await client.blpop([key], timeout=30)
    finally:
        await client.aclose()
    assert got is not None, "the job never started"
    pid, attempt = got[1].decode().split(":")
    return int(pid), int(attempt)


async def test_sigkilled_worker_job_is_rerun_by_another_worker_after_the_lease(
    queue: Queue, redis_url: str, spawn_worker: object, queue_name: str
) -> None:
    env = {"TEST_LEASE": "1"}
    first = spawn_worker(env=env)  # type: ignore[operator]
    key = f"{queue_name}:started"
    job = await queue.enqueue(tasks.signal_and_sleep.options(max_attempts=1), redis_url, key, 0.3)
    pid, attempt = await wait_started(queue, key)
    assert (pid, attempt) == (first.pid, 1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)

    second = spawn_worker(env=env)  # type: ignore[operator]
    pid2, attempt2 = await wait_started(queue, key)
    assert pid2 == second.pid
    assert attempt2 == 2  # the lost delivery is counted, but does not use up max_attempts=1
    assert await job.result(timeout=30) == second.pid
    info = await job.info()
    assert info.status is JobStatus.COMPLETE
    stats = await queue.redis.hgetall(QueueKeys(queue_name).stats)
    assert stats[b"reaped"] == b"1"


async def test_sigterm_drains_and_hands_back_unfinished_jobs_at_once(
    queue: Queue, redis_url: str, spawn_worker: object, queue_name: str
) -> None:
    key = f"{queue_name}:started"
    # a 30 s lease: if the job were not handed back, the second worker would wait 30 s
    first = spawn_worker(env={"TEST_LEASE": "30", "TEST_GRACE": "0.2"})  # type: ignore[operator]
    short = await queue.enqueue(tasks.sleepy, 0.05)
    long = await queue.enqueue(tasks.signal_and_sleep, redis_url, key, 60)
    await wait_started(queue, key)
    assert await short.result(timeout=10) == "slept"
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    output = first.stdout.read().decode() if first.stdout else ""
    assert "worker.draining" in output and "worker.stopped" in output

    # handed back: queued again at once, the interrupted attempt not counted
    info = await long.info()
    assert info.status is JobStatus.QUEUED
    assert info.attempts == 0
    assert await queue.redis.zcard(QueueKeys(queue_name).active) == 0

    second = spawn_worker(env={"TEST_LEASE": "30"})  # type: ignore[operator]
    pid, attempt = await wait_started(queue, key)
    assert (pid, attempt) == (second.pid, 1)
    await long.abort()


async def test_sigterm_lets_running_jobs_finish_within_grace(
    queue: Queue, redis_url: str, spawn_worker: object, queue_name: str
) -> None:
    key = f"{queue_name}:started"
    proc = spawn_worker(env={"TEST_GRACE": "30"})  # type: ignore[operator]
    job = await queue.enqueue(tasks.signal_and_sleep, redis_url, key, 0.5)
    await wait_started(queue, key)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert await job.result(timeout=1) == proc.pid


async def test_second_signal_stops_at_once(
    queue: Queue, redis_url: str, spawn_worker: object, queue_name: str
) -> None:
    key = f"{queue_name}:started"
    proc = spawn_worker(env={"TEST_GRACE": "600"})  # type: ignore[operator]
    job = await queue.enqueue(tasks.signal_and_sleep, redis_url, key, 600)
    await wait_started(queue, key)
    proc.send_signal(signal.SIGTERM)
    out = b""
    assert proc.stdout is not None
    while b"worker.draining" not in out:  # wait for the drain to begin, read from its log
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line, "worker exited before draining"
        out += line
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert await job.status() is JobStatus.QUEUED


async def test_idle_worker_sends_at_most_about_one_command_per_second(
    redis_url: str, spawn_worker: object, queue_name: str
) -> None:
    import redis.asyncio as aioredis

    proc = spawn_worker()  # type: ignore[operator]
    client = aioredis.from_url(redis_url, socket_timeout=None)
    commands: list[str] = []
    window = 6.0
    try:
        # the worker registers itself with its first heartbeat, and is idle once it
        # blocks on its wake list (its connections are all open by then): wait for both
        while not (
            await client.zcard(QueueKeys(queue_name).workers)
            and any(c["cmd"] == "blpop" and "b" in c["flags"] for c in await client.client_list())
        ):
            await client.blpop(["never"], timeout=0.05)
        async with client.monitor() as monitor:
            # MONITOR sees what clients send and what scripts call inside; count
            # only what a client sent: the worker is the only other client now
            with anyio.move_on_after(window):  # the measurement window, not a synchronisation
                async for entry in monitor.listen():
                    if entry["client_type"] != "lua":
                        commands.append(entry["command"].split(" ")[0])
    finally:
        await client.aclose()
    assert proc.poll() is None
    assert commands, "the idle worker sent nothing at all in the window: is it alive?"
    assert len(commands) / window <= 1.0, f"idle worker sent {commands} in {window}s"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_worker_cli_reports_bad_target() -> None:
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "aioqueue", "run", "tests.no_such_module:worker"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "cannot import 'tests.no_such_module'" in proc.stderr
    assert "Traceback" not in proc.stderr
