"""Poison jobs among normal ones on ``aioqueue run --processes 2``: each poison job
ends in the dead-letter set with a clear error, every normal job completes, and no
worker process dies (issue #11)."""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from aioqueue import JobFailed, Queue
from aioqueue._protocol.envelope import ENVELOPE_VERSION, Envelope, encode_envelope
from aioqueue._protocol.keys import QueueKeys
from tests import poison_app as app
from tests.supervised import Supervised

NORMAL = 1000

# job id -> (task, error type, words in its message); the task's exceptions are
# described in tests/poison_app.py
POISON: dict[str, tuple[Any, str, str]] = {
    "surrogate": (app.surrogate_message, "builtins.ValueError", "no such file: \\udcff\\udcfe"),
    "unprintable": (app.unprintable, "tests.poison_app.Unprintable", "str() failed"),
    "retry-timedelta": (app.retry_timedelta, "aioqueue.errors.Retry", "defer=60.0"),
    "retry-inf": (app.retry_inf, "aioqueue.errors.ConfigurationError", "Retry(defer=)"),
    "huge-message": (app.huge_message, "builtins.ValueError", "bytes cut"),
    "hangs": (app.hangs, "builtins.TimeoutError", "timed out after 0.5s"),
    "hangs-in-thread": (app.hangs_in_thread, "builtins.TimeoutError", "timed out after 0.5s"),
    "deep-result": (app.deep_result, "aioqueue.errors.SerializationError", "recursion"),
}
# stored by hand: envelopes no validating producer writes
RAW: dict[str, tuple[dict[str, Any], str, str]] = {
    "ttl-inf": ({"result_ttl": math.inf}, "aioqueue.errors.ConfigurationError", "result_ttl"),
    "ttl-nan": ({"result_ttl": math.nan}, "aioqueue.errors.ConfigurationError", "result_ttl"),
    "deep-payload": (
        {"data": b"\x91" * 100_000 + b"\xc0"},
        "aioqueue.errors.SerializationError",
        "recursion",
    ),
}


@pytest.fixture
def supervise(redis_url: str, queue_name: str) -> Iterator[Any]:
    started: list[Supervised] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Supervised:
        sup = Supervised(
            args, redis_url=redis_url, queue=queue_name, env=env, target="tests.poison_app:worker"
        )
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()


async def enqueue_all(queue: Queue, queue_name: str) -> list[str]:
    calls = [app.noop.call(i) for i in range(NORMAL)]
    for job_id, (task, _, _) in POISON.items():
        calls.insert(len(calls) // 2, task.options(job_id=job_id).call())
    jobs = await queue.enqueue_many(calls)
    for job_id, (fields, _, _) in RAW.items():
        data = fields.pop("data", None) or queue.serializer.dumps([[1], {}])
        envelope = Envelope(ENVELOPE_VERSION, app.noop.name, data, **fields)
        await queue.scripts.enqueue(queue_name, [(job_id, encode_envelope(envelope), 0, 0, "")])
    return [j.id for j in jobs if j.id not in POISON]


def test_poison_jobs_among_a_thousand_are_dead_lettered_and_no_process_dies(
    supervise: Any, redis_url: str, queue_name: str
) -> None:
    sup = supervise("--processes", "2")
    sup.wait_for("supervisor.child_ready", count=2)

    async def main() -> None:
        async with Queue(redis_url, name=queue_name) as queue:
            normal = await enqueue_all(queue, queue_name)
            assert [await queue.job(i).result(timeout=30) for i in normal] == list(range(NORMAL))
            expected = {k: v[1:] for k, v in POISON.items()} | {k: v[1:] for k, v in RAW.items()}
            for job_id, (exc_type, words) in expected.items():
                with pytest.raises(JobFailed) as caught:
                    await queue.job(job_id).result(timeout=30)
                assert caught.value.exc_type == exc_type, job_id
                assert words.lower() in caught.value.exc_message.lower(), job_id
            dead = await queue.redis.zrange(QueueKeys(queue_name).dead, 0, -1)
            assert sorted(d.decode() for d in dead) == sorted(expected)
            record = await queue.redis.hstrlen(QueueKeys(queue_name).job("huge-message"), "e")
            assert record <= 64 * 1024 + 512

    anyio.run(main)
    assert len(sup.matching("supervisor.child_started")) == 2  # none restarted
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0  # a thread stuck in a job does not hold its process
    (stopped,) = sup.matching("supervisor.stopped")
    assert stopped["restarts"] == 0
    assert [e["exit"] for e in sup.matching("supervisor.child_exited")] == ["exit code 0"] * 2


def test_a_job_that_kills_its_process_is_dead_lettered_and_the_others_complete(
    supervise: Any, redis_url: str, queue_name: str
) -> None:
    """The one poison a process cannot survive (``os._exit``): the supervisor replaces
    the process a bounded number of times (max_lost), and the jobs that died with it
    run again and complete; none of them is dead-lettered."""
    sup = supervise("--processes", "2", "--restart-backoff", "0.05", env={"TEST_LEASE": "1"})
    sup.wait_for("supervisor.child_ready", count=2)
    key = f"{queue_name}:runs"

    async def main() -> None:
        async with Queue(redis_url, name=queue_name) as queue:
            calls = [app.counted.call(key) for _ in range(200)]
            calls.insert(100, app.kills_its_worker.options(job_id="killer").call())
            jobs = [j for j in await queue.enqueue_many(calls) if j.id != "killer"]
            for job in jobs:
                await job.result(timeout=60)
            with pytest.raises(JobFailed) as caught:
                await queue.job("killer").result(timeout=60)
            assert caught.value.exc_type == "aioqueue.errors.WorkerLost"
            dead = await queue.redis.zrange(QueueKeys(queue_name).dead, 0, -1)
            assert dead == [b"killer"]
            assert await queue.redis.llen(key) >= 200  # lost ones ran again

    anyio.run(main)
    restarts = len(sup.matching("supervisor.child_started")) - 2
    assert 1 <= restarts <= app.kills_its_worker.max_lost + 1
    sup.send(signal.SIGTERM)
    assert sup.wait(30) == 0
