"""The event stream (docs/reference/events.md): written by the Functions that change a
job's state, read back by ``aioqueue events`` (a real subprocess) and ``Admin``."""

from __future__ import annotations

import json
import os
import queue as threadqueue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aioqueue import ConfigurationError, JobAborted, JobFailed, Queue, Worker
from aioqueue._protocol.garbage import read_garbage
from aioqueue._protocol.keys import QueueKeys
from aioqueue._protocol.library import VERSION
from aioqueue.admin import Admin
from tests import tasks
from tests.conftest import running
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent


class Follow:
    """``aioqueue events --follow --json`` as a child process; its lines, parsed."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "AIOQUEUE_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aioqueue", "events", "--follow", "--json", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: threadqueue.Queue[dict[str, Any]] = threadqueue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    async def until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> None:
        """Reads lines (in a thread: a blocking get) until ``done(all lines so far)``."""
        with anyio.fail_after(timeout):
            while not done(self.seen):
                self.seen.append(await anyio.to_thread.run_sync(self.lines.get))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def follow(redis_url: str) -> Iterator[Callable[..., Follow]]:
    made: list[Follow] = []

    def start(*args: str, url: str = redis_url) -> Follow:
        made.append(Follow(url, *args))
        return made[-1]

    yield start
    for f in made:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait()


def by_job(lines: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for line in lines:
        out.setdefault(line["job"], []).append((line["event"], line["attempt"]))
    return out


def count(kind: str) -> Callable[[list[dict[str, Any]]], int]:
    return lambda lines: sum(1 for line in lines if line["event"] == kind)


WORKER_TASKS = [tasks.add, tasks.flaky, tasks.boom, tasks.sleepy]


async def test_follow_shows_every_state_change_of_100_jobs_in_order_per_job(
    redis_url: str, queue: Queue, queue_name: str, follow: Callable[..., Follow]
) -> None:
    # --from 0: from the stream's start, so it misses nothing it was started before
    tail = follow("--queue", queue_name, "--from", "0")
    worker = Worker(WORKER_TASKS, redis_url=redis_url, queues=[queue_name])
    async with running(worker):
        sleeper = await queue.enqueue(tasks.sleepy, 60)
        await tail.until(lambda lines: ("started", 1) in by_job(lines).get(sleeper.id, []))
        assert await sleeper.abort()
        plain = await queue.enqueue_many(tasks.add.call(i, 1) for i in range(80))
        retried = await queue.enqueue_many(tasks.flaky.call(1) for _ in range(10))
        dead = await queue.enqueue_many(tasks.boom.call("no") for _ in range(8))
        delayed = await queue.enqueue(tasks.add.options(delay=0.2), 1, 2)
        for job in [*plain, *retried, delayed]:
            await job.result(timeout=30)
        for job in dead:
            with pytest.raises(JobFailed):
                await job.result(timeout=30)
        with pytest.raises(JobAborted):
            await sleeper.result(timeout=30)
        await tail.until(lambda lines: len(lines) >= 3 + 80 * 3 + 10 * 5 + 8 * 4 + 3)
    assert tail.stop() == 0
    lines = tail.seen
    assert len({job.id for job in [sleeper, *plain, *retried, *dead, delayed]}) == 100
    jobs = by_job(lines)
    assert len(lines) == 3 + 80 * 3 + 10 * 5 + 8 * 4 + 3  # nothing more, nothing twice
    assert jobs[sleeper.id] == [("enqueued", 0), ("started", 1), ("aborted", 1)]
    for job in plain:
        assert jobs[job.id] == [("enqueued", 0), ("started", 1), ("completed", 1)]
    for job in retried:
        assert jobs[job.id] == [
            ("enqueued", 0), ("started", 1), ("retried", 1), ("started", 2), ("completed", 2)
        ]  # fmt: skip
    for job in dead:
        assert jobs[job.id] == [("enqueued", 0), ("started", 1), ("failed", 1), ("dead", 1)]
    assert jobs[delayed.id] == [("scheduled", 0), ("started", 1), ("completed", 1)]
    ids = [line["id"] for line in lines]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    for line in lines:
        assert line["queue"] == queue_name and line["task"].startswith("tests.tasks.")
        if line["event"] in ("started", "completed", "retried", "failed", "dead"):
            assert line["worker"] == worker.id
        if line["event"] in ("retried", "failed", "dead"):
            assert line["error"] in ("builtins.RuntimeError", "builtins.ValueError")
        if line["event"] in ("scheduled", "retried"):
            assert line["due"] >= line["ts"]
        if line["event"] == "started":
            assert line["wait_ms"] >= 0
        if line["event"] in ("completed", "failed", "aborted"):
            assert line["duration_ms"] >= 0


async def test_a_reader_attaching_late_reads_everything_after_the_id_it_names(
    redis_url: str, queue: Queue, queue_name: str, follow: Callable[..., Follow]
) -> None:
    for i in range(30):
        await queue.enqueue(tasks.add, i, i)
    async with Admin(redis_url) as admin:
        first = await admin.events(queue_name, after="0", count=1000)
        assert [e.event for e in first] == ["enqueued"] * 30
        cut = first[9].id
        # the CLI, attached late, prints exactly what follows the id, then what comes
        tail = follow("--queue", queue_name, "--from", cut)
        await tail.until(lambda lines: len(lines) >= 20)
        assert [line["id"] for line in tail.seen] == [e.id for e in first[10:]]
        late = await queue.enqueue(tasks.add, 100, 1)
        await tail.until(lambda lines: len(lines) >= 21)
        assert tail.seen[-1]["job"] == late.id and tail.seen[-1]["event"] == "enqueued"
        assert tail.stop() == 0
        # the same through Admin, in pages of any size
        after, got = cut, []
        while page := await admin.events(queue_name, after=after, count=7):
            got += page
            after = page[-1].id
        assert [e.id for e in got] == [e.id for e in first[10:]] + [tail.seen[-1]["id"]]
        newest = await admin.events(queue_name, count=3)
        assert [e.id for e in newest] == [e.id for e in got[-3:]]
        assert await admin.last_event_id(queue_name) == got[-1].id


def test_the_cli_prints_a_compact_line_per_event_and_json_per_line(
    redis_url: str, queue_name: str
) -> None:
    async def enqueue() -> None:
        async with Queue(redis_url, name=queue_name) as queue:
            await queue.enqueue(tasks.add, 1, 2)
            await queue.enqueue(tasks.add.options(delay=60), 1, 2)

    anyio.run(enqueue)
    env = {**os.environ, "AIOQUEUE_REDIS_URL": redis_url}
    base = [sys.executable, "-m", "aioqueue", "events", "--queue", queue_name]
    human = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60, check=True)
    rows = human.stdout.splitlines()
    assert len(rows) == 2
    assert rows[0].split()[1:5] == [queue_name, "enqueued", rows[0].split()[3], "tests.tasks.add"]
    assert "scheduled" in rows[1] and "due=" in rows[1]
    as_json = subprocess.run(
        [*base, "--json", "--count", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    (line,) = as_json.stdout.splitlines()
    assert json.loads(line)["event"] == "scheduled"
    bad = subprocess.run([*base, "--from", "yesterday"], env=env, capture_output=True, timeout=60)
    assert bad.returncode == 2


async def test_follow_survives_a_redis_restart_and_goes_on_from_its_last_id(
    queue_name: str, follow: Callable[..., Follow]
) -> None:
    server = RedisServer(appendonly=True)
    server.start()
    try:
        async with Queue(server.url, name=queue_name) as queue:
            await queue.enqueue(tasks.add, 1, 1)
        tail = follow("--queue", queue_name, "--from", "0", url=server.url)
        await tail.until(lambda lines: len(lines) >= 1)
        server.stop()
        server.start()  # the same socket and AOF: the stream is still there
        async with Queue(server.url, name=queue_name) as queue:
            again = await queue.enqueue(tasks.add, 2, 2)
        await tail.until(lambda lines: len(lines) >= 2)
        assert tail.seen[1]["job"] == again.id
        assert tail.stop() == 0
        assert any("retrying in" in line for line in tail.stderr), tail.stderr
    finally:
        server.cleanup()


async def test_the_cap_holds_approximately_and_zero_writes_no_stream(
    redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    async with Queue(redis_url, name=queue_name, events_maxlen=50) as queue:
        for i in range(300):
            await queue.enqueue(tasks.add, i, 0)
        node = int((await queue.redis.config_get("stream-node-max-entries"))[
            "stream-node-max-entries"])  # fmt: skip
        # an entry a job: MAXLEN ~ trims whole nodes, at least 50 kept, at most a node more
        assert 50 <= await queue.redis.xlen(keys.events) <= 50 + node
    batched = f"{queue_name}-batched"
    async with Queue(redis_url, name=batched, events_maxlen=500) as queue:
        for _ in range(10):
            await queue.enqueue_many(tasks.add.call(i, 0) for i in range(100))
        async with Admin(redis_url) as admin:
            kept = await admin.events(batched, after="0", count=100)
        entries = await queue.redis.xlen(QueueKeys(batched).events)
        # an entry of 100 jobs: the cap counts jobs, not entries (10 written, fewer kept)
        assert entries < 10
        assert 500 <= len(kept) == entries * 100 <= 1000
    other = f"{queue_name}-off"
    async with Queue(redis_url, name=other, events_maxlen=0) as queue:
        jobs = await queue.enqueue_many(tasks.add.call(i, 0) for i in range(20))
        worker = Worker([tasks.add], redis_url=redis_url, queues=[other], events_maxlen=0)
        async with running(worker):
            assert [await j.result(timeout=30) for j in jobs] == [i for i in range(20)]
        assert await queue.redis.exists(QueueKeys(other).events) == 0


@pytest.mark.parametrize("planted", ["a string", "the largest stream id"])
async def test_garbage_at_the_stream_key_is_set_aside_and_the_job_completes(
    redis_url: str, queue: Queue, queue_name: str, planted: str
) -> None:
    keys = QueueKeys(queue_name)
    if planted == "a string":
        await queue.redis.set(keys.events, b"\xffnot a stream")
    else:  # XADD * can add nothing after it
        await queue.redis.xadd(
            keys.events, {"x": "y"}, id="18446744073709551615-18446744073709551615"
        )
    job = await queue.enqueue(tasks.add, 2, 3)
    async with running(Worker([tasks.add], redis_url=redis_url, queues=[queue_name])):
        assert await job.result(timeout=30) == 5
    (aside,) = await read_garbage(queue.redis, queue_name)
    assert aside.key.startswith(f"{keys.garbage}:events:".encode())  # kept, not deleted
    assert aside.reason.startswith("XADD refused this ")
    async with Admin(redis_url) as admin:
        events = await admin.events(queue_name, after="0")
    assert [e.event for e in events] == ["enqueued", "started", "completed"]


async def test_a_batch_finish_with_one_bad_item_writes_the_others_events(
    queue: Queue, queue_name: str, redis_url: str
) -> None:
    keys = QueueKeys(queue_name)
    for i in range(3):
        await queue.enqueue(tasks.add, i, 0)
    claimed = (await queue.scripts.claim(queue_name, 10, "w", 30_000)).jobs
    await queue.redis.hset(keys.job(claimed[1].id), "a", "three")  # written while it ran
    done = [(j.id, j.token, "complete", b"\x00", -1, 0) for j in claimed]
    assert await queue.scripts.finish(queue_name, done) == [1, 2, 1]
    async with Admin(redis_url) as admin:
        last = [(e.event, e.job) for e in await admin.events(queue_name, count=3)]
    # one entry for each kind of event the call wrote, in the order first written
    assert last == [
        ("completed", claimed[0].id), ("completed", claimed[2].id), ("set_aside", claimed[1].id)
    ]  # fmt: skip


async def test_a_stream_cap_that_is_not_a_count_is_refused_before_anything_is_written(
    redis_url: str, queue_name: str
) -> None:
    client = aioredis.from_url(redis_url)
    try:
        async with Queue(redis_url, name=queue_name) as queue:
            await queue.scripts.load()
            prefix = QueueKeys(queue_name).prefix
            with pytest.raises(ResponseError, match="malformed event stream length"):
                await client.fcall(
                    f"aq_{VERSION}_enqueue", 1, prefix, "-1", 0, "j1", b"x", 0, 0, ""
                )
        assert await client.exists(QueueKeys(queue_name).job("j1")) == 0
    finally:
        await client.aclose()


async def test_on_a_cluster_each_queue_is_read_in_its_own_slot(
    redis_cluster: Any, queue_name: str, follow: Callable[..., Follow]
) -> None:
    url = redis_cluster.url
    names = [f"{queue_name}-a", f"{queue_name}-b"]  # two queues, two hash tags
    tail = follow(*(a for n in names for a in ("--queue", n)), "--from", "0", url=url)
    ids = {}
    for name in names:
        async with Queue(url, name=name) as queue:
            ids[name] = (await queue.enqueue(tasks.add, 1, 1)).id
    await tail.until(lambda lines: len(lines) >= 2)
    assert {(line["queue"], line["job"]) for line in tail.seen} == set(ids.items())
    assert tail.stop() == 0
    async with Admin(url) as admin:
        for name in names:
            (event,) = await admin.events(name, after="0")
            assert (event.event, event.job) == ("enqueued", ids[name])
            assert await admin.follow_events({name: event.id}, block=0.05) == []
        with pytest.raises(ConfigurationError):
            await admin.follow_events(dict.fromkeys(names, "0"))
