"""Signing covers what identifies a job: a signed payload replayed under another id, onto
another queue or with its lock changed is set aside, never run. Keys rotate."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from aioqueue import Queue, Worker, current_job, task
from aioqueue._protocol import signing
from aioqueue._protocol.garbage import read_garbage
from aioqueue._protocol.keys import QueueKeys
from aioqueue.errors import ConfigurationError, SignatureError

pytestmark = pytest.mark.anyio

MISMATCH = "job signature does not match its queue, id, lock and payload under any signing key"


async def record_run(url: str, key: str) -> None:
    """Records which job ran, on which queue."""
    client = aioredis.from_url(url)
    try:
        await client.rpush(key, f"{current_job().queue}/{current_job().job_id}")
    finally:
        await client.aclose()


@task(max_attempts=1)
async def refund(url: str, key: str, amount: int) -> int:
    await record_run(url, key)
    return amount


@task(unique=True, max_attempts=1)
async def exclusive(url: str, key: str) -> None:
    await record_run(url, key)


async def drain(redis_url: str, queues: list[str], key: bytes | str | list[str]) -> None:
    await Worker(
        [refund, exclusive], redis_url=redis_url, queues=queues, signing_key=key, burst=True
    ).run()


async def copy_job(redis: aioredis.Redis, src: str, dest: str, drop: tuple[str, ...] = ()) -> None:
    """What an attacker with write access does: the signed fields under a new key, queued."""
    fields = {k: v for k, v in (await redis.hgetall(src)).items() if k.decode() not in drop}
    fields.update({b"s": b"queued", b"a": b"0"})
    await redis.hset(dest, mapping=fields)


async def test_a_signed_payload_copied_under_new_ids_or_queues_is_set_aside(
    redis_url: str, queue_name: str
) -> None:
    other = f"{queue_name}-other"
    ran = f"{queue_name}:ran"
    keys, other_keys = QueueKeys(queue_name), QueueKeys(other)
    async with Queue(redis_url, name=queue_name, signing_key="k1") as queue:
        job = await queue.enqueue(refund, redis_url, ran, 100)
        await drain(redis_url, [queue_name, other], "k1")
        assert await job.result(timeout=5) == 100
        # ten copies of the refund under new ids, and one on another queue the worker serves
        for i in range(10):
            await copy_job(queue.redis, keys.job(job.id), keys.job(f"copy-{i}"))
            await queue.redis.lpush(keys.ready, f"copy-{i}")
        await copy_job(queue.redis, keys.job(job.id), other_keys.job(job.id))
        await queue.redis.lpush(other_keys.ready, job.id)
        await drain(redis_url, [queue_name, other], "k1")
        assert await queue.redis.lrange(ran, 0, -1) == [f"{queue_name}/{job.id}".encode()]
        aside = await read_garbage(queue.redis, queue_name) + await read_garbage(queue.redis, other)
    assert [a.reason for a in aside] == [MISMATCH] * 11


async def test_a_signed_job_whose_lock_was_stripped_is_set_aside(
    redis_url: str, queue_name: str
) -> None:
    ran = f"{queue_name}:ran"
    keys = QueueKeys(queue_name)
    async with Queue(redis_url, name=queue_name, signing_key="k1") as queue:
        job = await queue.enqueue(exclusive, redis_url, ran)
        await queue.redis.hdel(keys.job(job.id), "u")  # would run beside a holder of the lock
        await drain(redis_url, [queue_name], "k1")
        assert await queue.redis.lrange(ran, 0, -1) == []
        assert [a.reason for a in await read_garbage(queue.redis, queue_name)] == [MISMATCH]


async def test_keys_rotate_sign_with_the_first_verify_with_any(
    redis_url: str, queue_name: str
) -> None:
    ran = f"{queue_name}:ran"
    async with (
        Queue(redis_url, name=queue_name, signing_key="old") as before,
        Queue(redis_url, name=queue_name, signing_key=["new", "old"]) as during,
        Queue(redis_url, name=queue_name, signing_key="retired") as stale,
    ):
        a = await before.enqueue(refund, redis_url, ran, 1)
        b = await during.enqueue(refund, redis_url, ran, 2)
        await drain(redis_url, [queue_name], ["new", "old"])  # mid-rotation: both accepted
        assert [await a.result(timeout=5), await b.result(timeout=5)] == [1, 2]
        c = await during.enqueue(refund, redis_url, ran, 3)
        d = await stale.enqueue(refund, redis_url, ran, 4)
        await drain(redis_url, [queue_name], "new")  # rotation done: signed with "new" first
        assert await c.result(timeout=5) == 3
        aside = await read_garbage(before.redis, queue_name)
        assert [(a.reason, d.id in a.key.decode()) for a in aside] == [(MISMATCH, True)]
        assert sorted(await before.redis.lrange(ran, 0, -1)) == sorted(
            f"{queue_name}/{j.id}".encode() for j in (a, b, c)
        )  # d, signed with a key no longer accepted, never ran


async def test_a_job_signed_by_an_older_version_is_set_aside_with_a_clear_reason(
    redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    async with Queue(redis_url, name=queue_name) as queue:
        job = await queue.enqueue(refund, redis_url, "unused", 1)
        payload = await queue.redis.hget(keys.job(job.id), "d")
        assert payload is not None
        old = signing.OLD_MAGIC + b"\x00" * 32 + payload  # the payload-only format
        await queue.redis.hset(keys.job(job.id), "d", old)
        await drain(redis_url, [queue_name], "k1")
        (aside,) = await read_garbage(queue.redis, queue_name)
    assert "older aioqueue" in aside.reason


def test_signing_keys_are_checked_where_they_are_given() -> None:
    for bad in ([], "", b"", ["ok", ""]):
        with pytest.raises(ConfigurationError):
            Worker([refund], signing_key=bad)
        with pytest.raises(ConfigurationError):
            Queue(signing_key=bad)


def test_the_signature_covers_queue_id_lock_and_payload() -> None:
    signer = signing.Signer("k")
    signed = signer.sign(b"payload", queue="q", job_id="1", lock="wq")
    assert signer.verify(signed, queue="q", job_id="1", lock=b"wq") == b"payload"
    for changed in (
        {"queue": "q2", "job_id": "1", "lock": "wq"},
        {"queue": "q", "job_id": "2", "lock": "wq"},
        {"queue": "q", "job_id": "1", "lock": ""},
        # the parts are length-prefixed: moving a byte from one to the next is a change
        {"queue": "q1", "job_id": "", "lock": "wq"},
    ):
        with pytest.raises(SignatureError):
            signer.verify(signed, **changed)  # type: ignore[arg-type]
    tampered = signed[:-1] + b"P"
    with pytest.raises(SignatureError):
        signer.verify(tampered, queue="q", job_id="1", lock="wq")
