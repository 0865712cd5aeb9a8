"""Security and limits: sizes, backpressure, out of memory, signing, TLS and ACL, secrets."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from aioqueue import (
    JobFailed,
    PayloadTooLarge,
    Queue,
    QueueFull,
    RedisOutOfMemory,
    Worker,
)
from aioqueue._protocol.garbage import read_garbage
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.errors import redact
from tests import tasks
from tests.conftest import running
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


def worker_for(url: str, queue_name: str, **kwargs: object) -> Worker:
    return Worker(
        [tasks.add, tasks.echo, tasks.signal_and_sleep],
        redis_url=url,
        queues=[queue_name],
        **kwargs,  # type: ignore[arg-type]
    )


async def test_oversized_job_is_refused_at_enqueue(redis_url: str, queue_name: str) -> None:
    async with Queue(redis_url, name=queue_name, max_payload=1000) as queue:
        with pytest.raises(PayloadTooLarge):
            await queue.enqueue(tasks.echo, "x" * 2000)
        assert await queue.redis.llen(QueueKeys(queue_name).ready) == 0
        await queue.enqueue(tasks.echo, "x" * 100)


async def test_oversized_result_fails_the_job(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(worker_for(redis_url, queue_name, max_result_size=1000)):
        job = await queue.enqueue(tasks.echo, "y" * 900)
        assert await job.result(timeout=5) == "y" * 900
        big = await queue.enqueue(tasks.echo, "y" * 5000)
        with pytest.raises(JobFailed) as caught:
            await big.result(timeout=5)
    assert caught.value.exc_type == "aioqueue.errors.PayloadTooLarge"


async def test_queue_full_raises_or_waits(redis_url: str, queue_name: str) -> None:
    async with Queue(redis_url, name=queue_name, max_length=3) as queue:
        await queue.enqueue_many(tasks.add.call(i, i) for i in range(3))
        with pytest.raises(QueueFull):
            await queue.enqueue(tasks.add, 9, 9)
        with pytest.raises(QueueFull):
            await queue.enqueue_many([tasks.add.call(1, 1)])
        assert await queue.redis.llen(QueueKeys(queue_name).ready) == 3

    async with Queue(
        redis_url, name=queue_name, max_length=3, wait_when_full=True, timeout=10
    ) as queue:
        async with running(worker_for(redis_url, queue_name, concurrency=1)):
            waited = await queue.enqueue(tasks.add, 20, 22)  # room is made by the worker
            assert await waited.result(timeout=10) == 42

    async with Queue(
        redis_url, name=queue_name, max_length=1, wait_when_full=True, timeout=0.2
    ) as queue:
        await queue.enqueue(tasks.add, 1, 1)
        with pytest.raises(QueueFull):
            await queue.enqueue(tasks.add, 1, 1)


async def test_out_of_memory_refuses_new_jobs_but_running_ones_finish(queue_name: str) -> None:
    server = RedisServer(extra=["--maxmemory-policy", "noeviction"])
    server.start()
    try:
        async with Queue(server.url, name=queue_name) as queue:
            key = f"{queue_name}:started"
            async with running(worker_for(server.url, queue_name)):
                job = await queue.enqueue(tasks.signal_and_sleep, server.url, key, 0.3)
                client = aioredis.from_url(server.url, socket_timeout=None)
                try:
                    await client.blpop([key], timeout=10)
                    used = (await client.info("memory"))["used_memory"]
                    await client.config_set("maxmemory", used // 2)
                    with pytest.raises(RedisOutOfMemory):
                        await queue.enqueue(tasks.add, 1, 1)
                    # the job that was running completes and its result is stored
                    assert await job.result(timeout=10) > 0
                    await client.config_set("maxmemory", 0)
                finally:
                    await client.aclose()
                assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2
    finally:
        server.cleanup()


async def test_signed_jobs_run_and_forged_ones_are_set_aside(
    redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    async with (
        Queue(redis_url, name=queue_name, signing_key="s3cret") as trusted,
        Queue(redis_url, name=queue_name) as unsigned,
        Queue(redis_url, name=queue_name, signing_key="wrong") as forger,
    ):
        async with running(worker_for(redis_url, queue_name, signing_key="s3cret")):
            assert await (await trusted.enqueue(tasks.add, 2, 2)).result(timeout=5) == 4
            bad1 = await unsigned.enqueue(tasks.add, 1, 1)
            bad2 = await forger.enqueue(tasks.add, 1, 1)
            with anyio.fail_after(10):
                while await trusted.redis.zcard(keys.garbage) < 2:
                    await anyio.sleep(0.01)  # set aside by the worker's next flush
        reasons = sorted(a.reason for a in await read_garbage(trusted.redis, queue_name))
        assert reasons == [
            "job is not signed",
            "job signature does not match its queue, id, lock and payload under any signing key",
        ]
        assert not await trusted.redis.exists(keys.job(bad1.id), keys.job(bad2.id))


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _ignore_uvloop_ssl_teardown(loop: asyncio.AbstractEventLoop) -> None:
    """uvloop's SSL layer may write after its TCP handle closed (MagicStack/uvloop#506).

    It is reported to the loop's exception handler from a callback, after the
    connection is already gone: nothing of aioqueue's fails. Every other
    exception still reaches the previous handler (anyio's test runner raises it).
    """
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, RuntimeError) and "the handler is closed" in str(exc):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def test_tls_and_acl_user_urls(tmp_path: Path, queue_name: str) -> None:
    _ignore_uvloop_ssl_teardown(asyncio.get_running_loop())
    cert, key = make_cert(tmp_path)
    port = free_port()
    server = RedisServer(
        port=0,
        extra=[
            "--tls-port", str(port),
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert),
            "--tls-auth-clients", "no",
            "--user", "default", "off",
            "--user", "app", "on", ">pa55word", "~*", "&*", "+@all",
        ],
    )  # fmt: skip
    server.start()
    url = f"rediss://app:pa55word@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        async with Queue(url, name=queue_name) as queue, running(worker_for(url, queue_name)):
            assert await (await queue.enqueue(tasks.add, 5, 6)).result(timeout=10) == 11
        with pytest.raises(Exception, match=r"WRONGPASS|invalid username-password"):
            async with Queue(url.replace("pa55word", "nope"), name=queue_name) as queue:
                pass
    finally:
        server.cleanup()


def test_passwords_are_redacted() -> None:
    assert redact("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("rediss://:secret@host/0") == "rediss://:***@host/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"
