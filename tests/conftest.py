from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from aioqueue import Queue, Worker
from tests.cluster import LocalCluster, LocalSentinel
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """3 primaries + 3 replicas, started on first use, once per session."""
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalSentinel]:
    """1 primary, 1 replica, 3 sentinels, started on first use, once per session."""
    setup = LocalSentinel()
    try:
        setup.start()
        yield setup
    finally:
        setup.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own, so tests never see each other's jobs."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture
async def queue(redis_url: str, queue_name: str) -> AsyncIterator[Queue]:
    async with Queue(redis_url, name=queue_name) as q:
        yield q


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Runs ``worker`` in this event loop for the duration of the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()
            worker.stop()  # no grace: tests end promptly


async def abort_running_sleepy_job(queue: Queue) -> None:
    """Enqueues a 60 s job, waits until a worker runs it, aborts it, and checks that
    awaiting it raises JobAborted (shared by the single, cluster and sentinel tests)."""
    from aioqueue import JobAborted, JobStatus
    from tests import tasks

    job = await queue.enqueue(tasks.sleepy, 60)
    with anyio.fail_after(10):
        while await job.status() is not JobStatus.ACTIVE:
            await anyio.sleep(0.02)
    assert await job.abort()
    with pytest.raises(JobAborted):
        await job.result(timeout=10)


@pytest.fixture
def spawn_worker(redis_url: str, queue_name: str) -> Iterator[Any]:
    """Starts ``aioqueue run tests.apps:worker`` as a real child process."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(*extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "AIOQUEUE_REDIS_URL": redis_url,
            "TEST_QUEUE": queue_name,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        proc = subprocess.Popen(
            # --processes 0: this process is the worker itself, not a supervisor of workers
            [
                sys.executable,
                "-m",
                "aioqueue",
                "run",
                "tests.apps:worker",
                "--processes",
                "0",
                *extra,
            ],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
