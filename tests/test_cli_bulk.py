"""Bulk operator actions do what they say, once: ``jobs retry --all`` and ``jobs purge --all``
act on the jobs dead when the command starts, each once, and print the exact count."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from click.testing import CliRunner

from aioqueue._cli.main import cli
from aioqueue._protocol.functions import Scripts
from aioqueue._protocol.keys import QueueKeys
from aioqueue.admin import PAGE
from tests import tasks
from tests.redis_server import RedisServer
from tests.supervised import enqueue
from tests.test_cli import (  # the fixtures are used by name
    dead_job,
    drain,
    invoke,
    logs_off_stdout,  # noqa: F401
    worker_thread,
)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def _status(scripts: Scripts, queue: str, job_id: str) -> bytes | None:
    raw: Any = await scripts.redis.hget(QueueKeys(queue).job(job_id), "s")
    return raw  # type: ignore[no-any-return]


def test_retry_all_reruns_a_job_that_fails_again_once(
    redis_url: str, queue_name: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported bug: the command looped until the dead set was empty, so a job
    that failed again at once was retried again (1 dead job ran 6 times)."""
    keys = QueueKeys(queue_name)
    job_id = dead_job(redis_url, queue_name, "again")
    calls: list[list[Any]] = []
    requeue = Scripts.requeue

    async def requeue_then_let_it_fail(self: Scripts, queue: str, ids: list[Any]) -> int:
        # The real requeue; then, before the command reads on, the worker runs the
        # job and it fails again, as a fast worker does: the race made certain.
        n = await requeue(self, queue, ids)
        calls.append(list(ids))
        if len(calls) < 5:  # bounded: the old loop would never end here
            with anyio.fail_after(10):
                while await _status(self, queue, job_id) != b"failed":
                    await anyio.sleep(0.01)  # state only Redis holds: no event to wait on
        return n

    monkeypatch.setattr(Scripts, "requeue", requeue_then_let_it_fail)
    with worker_thread(redis_url, queue_name):
        out = invoke("jobs", "retry", "--all", "--queue", queue_name, "--redis-url", redis_url)
    assert out.exit_code == 0
    assert out.stdout == f"requeued 1 job(s) of queue {queue_name}\n"
    assert len(calls) == 1
    # one failure at first, one from the retry: it ran twice in all, not six times
    assert sync_redis.hget(keys.stats, "failed") == b"2"
    assert sync_redis.zrange(keys.dead, 0, -1) == [job_id.encode()]


def test_retry_and_purge_all_act_on_every_page_once_with_the_exact_count(
    redis_url: str, queue_name: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = QueueKeys(queue_name)
    total = PAGE * 2 + 17
    ids = enqueue(redis_url, queue_name, [tasks.boom.call(str(i)) for i in range(total)])
    drain(redis_url, queue_name)
    assert sync_redis.zcard(keys.dead) == total
    base = ["--queue", queue_name, "--redis-url", redis_url, "--json"]

    pages: list[int] = []
    purge = Scripts.purge
    late = "failed-after-the-start"

    async def purge_while_another_job_fails(self: Scripts, queue: str, page: list[Any]) -> int:
        pages.append(len(page))
        if len(pages) == 1:  # a job dead-lettered after the command started: not its business
            now = await self.redis.time()
            await self.redis.hset(keys.job(late), mapping={"s": "failed", "a": 1})
            await self.redis.zadd(keys.dead, {late: now[0] * 1000 + 1000})
        return await purge(self, queue, page)

    out = invoke("jobs", "retry", "--all", *base)
    assert json.loads(out.stdout) == {"queue": queue_name, "requeued": total}
    assert sync_redis.llen(keys.ready) == total and sync_redis.zcard(keys.dead) == 0
    drain(redis_url, queue_name)  # they all fail again

    monkeypatch.setattr(Scripts, "purge", purge_while_another_job_fails)
    out = invoke("jobs", "purge", "--all", *base)
    assert json.loads(out.stdout) == {"queue": queue_name, "purged": total}
    # in pages of at most PAGE ids (those dead in the newest millisecond come last)
    assert sum(pages) == total and max(pages) == PAGE and len(pages) >= 3
    assert sync_redis.zrange(keys.dead, 0, -1) == [late.encode()]
    assert not any(sync_redis.exists(keys.job(i)) for i in ids)


def test_ids_given_twice_are_acted_on_once(redis_url: str, queue_name: str) -> None:
    a = dead_job(redis_url, queue_name)
    out = CliRunner().invoke(
        cli, ["jobs", "retry", a, a, "nope", "--queue", queue_name, "--redis-url", redis_url]
    )
    assert out.stdout == f"requeued 1 job(s) of queue {queue_name}\n"
    assert out.exit_code == 1 and "1 of 2 id(s) are not failed jobs" in out.stderr


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop (SIGSTOP) and resume."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.cleanup()


def test_a_deadline_says_redis_did_not_answer_not_an_empty_reason(
    private_redis: RedisServer,
) -> None:
    assert private_redis.process is not None
    private_redis.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    url = private_redis.url
    for args in (["info"], ["jobs", "failed"], ["check"], ["jobs", "retry", "--all"]):
        out = CliRunner().invoke(cli, [*args, "--redis-url", url, "--redis-timeout", "0.2"])
        assert out.exit_code == 2, out.output
        assert out.stderr == f"aioqueue: Redis at {url} did not answer within 0.2s\n", args


def test_a_bulk_action_stopped_half_way_says_how_many_it_did(
    private_redis: RedisServer, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = private_redis.url
    enqueue(url, queue_name, [tasks.boom.call(str(i)) for i in range(PAGE + 5)])
    drain(url, queue_name)
    requeue = Scripts.requeue
    done: list[int] = []

    async def requeue_then_redis_stalls(self: Scripts, queue: str, page: list[Any]) -> int:
        n = await requeue(self, queue, page)
        done.append(n)
        assert private_redis.process is not None
        private_redis.process.send_signal(signal.SIGSTOP)
        return n

    monkeypatch.setattr(Scripts, "requeue", requeue_then_redis_stalls)
    out = CliRunner().invoke(
        cli,
        ["jobs", "retry", "--all", "--queue", queue_name, "--redis-url", url,
         "--redis-timeout", "0.2"],
    )  # fmt: skip
    assert out.exit_code == 2
    (n,) = done
    assert 0 < n <= PAGE
    assert out.stderr == (
        f"aioqueue: requeued {n} job(s) of queue {queue_name}, then stopped:"
        f" Redis at {url} did not answer within 0.2s\n"
    )
