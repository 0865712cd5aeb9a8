"""The middleware seam: which hooks run, in what order, with what, and that no
middleware can hurt a job, an enqueue or a worker."""

from __future__ import annotations

import contextvars
from collections import defaultdict
from typing import Any

import anyio
import pytest
import structlog

from aioqueue import ConfigurationError, JobFailed, PayloadTooLarge, Queue, Worker, task
from aioqueue.middleware import (
    Attempt,
    AttemptResult,
    Enqueue,
    Middleware,
    WorkerInfo,
)
from tests import tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio

seen_by_job: contextvars.ContextVar[str] = contextvars.ContextVar("seen_by_job", default="")


@task
async def reads_context() -> str:
    return seen_by_job.get()


class Recorder(Middleware):
    """Records every call; half of its hooks are async, to cover both kinds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.by_job: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        self.settled = anyio.Event()
        self.expect_settled = 0

    def before_enqueue(self, enqueue: Enqueue) -> None:
        self.calls.append(("before_enqueue", [m.task for m in enqueue.messages]))
        for m in enqueue.messages:
            m.headers["from"] = "producer"
            m.headers["job"] = m.job_id

    async def after_enqueue(self, enqueue: Enqueue, error: BaseException | None) -> None:
        self.calls.append(("after_enqueue", type(error).__name__ if error else None))

    async def on_worker_start(self, worker: WorkerInfo) -> None:
        self.calls.append(("on_worker_start", worker.queues))

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        self.calls.append(("on_worker_stop", worker.queues))

    async def before_attempt(self, attempt: Attempt) -> None:
        seen_by_job.set(attempt.headers.get("from", "?"))
        attempt.state["mine"] = attempt.attempt
        self.by_job[attempt.job_id].append(("before", (attempt.attempt, dict(attempt.headers))))

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        assert attempt.state["mine"] == attempt.attempt
        error = type(result.error).__name__ if result.error else None
        self.by_job[attempt.job_id].append(("after", (attempt.attempt, result.outcome, error)))

    def on_settled(self, attempt: Attempt, result: AttemptResult) -> None:
        self.by_job[attempt.job_id].append(("settled", (attempt.attempt, result.written)))
        self.expect_settled -= 1
        if self.expect_settled == 0:
            self.settled.set()


async def test_every_hook_runs_in_order_with_what_it_should_see(
    redis_url: str, queue_name: str
) -> None:
    rec = Recorder()
    rec.expect_settled = 6  # add, reads_context, boom, unknown, flaky x2
    worker = Worker(
        [tasks.add, tasks.boom, tasks.flaky, reads_context],
        redis_url=redis_url,
        queues=[queue_name],
        middleware=[rec],
    )
    async with Queue(redis_url, name=queue_name, middleware=[rec]) as queue:
        async with running(worker):
            done = await queue.enqueue(tasks.add, 1, 2)
            ctx = await queue.enqueue(reads_context)
            failed = await queue.enqueue(tasks.boom, "no")
            unknown = await queue.enqueue("tests.no_such_task")
            flaky = (await queue.enqueue_many([tasks.flaky.call(1)]))[0]
            assert await done.result(timeout=5) == 3
            # a context variable set in before_attempt is what the task's code sees
            assert await ctx.result(timeout=5) == "producer"
            assert await flaky.result(timeout=5) == 2
            for job in (failed, unknown):
                with pytest.raises(JobFailed):
                    await job.result(timeout=5)
            with anyio.fail_after(5):
                await rec.settled.wait()
    headers = {"from": "producer"}
    assert rec.by_job[done.id] == [
        ("before", (1, {**headers, "job": done.id})),
        ("after", (1, "complete", None)),
        ("settled", (1, True)),
    ]
    assert [c for c, _ in rec.by_job[failed.id]] == ["before", "after", "settled"]
    assert rec.by_job[failed.id][1] == ("after", (1, "failed", "ValueError"))
    assert rec.by_job[unknown.id][1] == ("after", (1, "dead", "UnknownTaskError"))
    assert [(c, v[:2]) for c, v in rec.by_job[flaky.id]] == [
        ("before", (1, {**headers, "job": flaky.id})),
        ("after", (1, "retried")),
        ("settled", (1, True)),
        ("before", (2, {**headers, "job": flaky.id})),
        ("after", (2, "complete")),
        ("settled", (2, True)),
    ]
    names = [c for c, _ in rec.calls]
    producer = [c for c in names if c.endswith("_enqueue")]
    assert producer == ["before_enqueue", "after_enqueue"] * 5
    starts = [i for i, (c, _) in enumerate(rec.calls) if c == "on_worker_start"]
    stops = [i for i, (c, _) in enumerate(rec.calls) if c == "on_worker_stop"]
    assert len(starts) == len(stops) == 1 and starts[0] < stops[0]
    assert rec.calls[-1] == ("on_worker_stop", (queue_name,))


class Broken(Middleware):
    """Every hook raises: none of it may reach a job, an enqueue or the worker."""

    def before_enqueue(self, enqueue: Enqueue) -> None:
        raise RuntimeError("before_enqueue")

    async def after_enqueue(self, enqueue: Enqueue, error: BaseException | None) -> None:
        raise RuntimeError("after_enqueue")

    def on_worker_start(self, worker: WorkerInfo) -> None:
        raise RuntimeError("on_worker_start")

    def before_attempt(self, attempt: Attempt) -> None:
        raise RuntimeError("before_attempt")

    async def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        raise RuntimeError("after_attempt")

    def on_settled(self, attempt: Attempt, result: AttemptResult) -> None:
        raise RuntimeError("on_settled")


async def test_a_middleware_that_raises_everywhere_hurts_nothing(
    redis_url: str, queue_name: str
) -> None:
    rec = Recorder()
    rec.expect_settled = 20
    worker = Worker(
        [tasks.add], redis_url=redis_url, queues=[queue_name], middleware=[Broken(), rec]
    )
    with structlog.testing.capture_logs() as logs:
        async with Queue(redis_url, name=queue_name, middleware=[Broken(), rec]) as queue:
            async with running(worker):
                jobs = await queue.enqueue_many(tasks.add.call(i, i) for i in range(20))
                assert [await j.result(timeout=5) for j in jobs] == [2 * i for i in range(20)]
                with anyio.fail_after(5):
                    await rec.settled.wait()
    failed = defaultdict(int)
    for line in logs:
        if line["event"] == "middleware.failed":
            assert line["middleware"] == "Broken"
            failed[line["hook"]] += 1
    assert failed == {
        "before_enqueue": 1,
        "after_enqueue": 1,
        "on_worker_start": 1,
        "before_attempt": 20,
        "after_attempt": 20,
        "on_settled": 20,
    }
    # the middleware after the broken one still ran every time
    assert sum(len(calls) for calls in rec.by_job.values()) == 60


async def test_after_enqueue_hears_the_error_and_nothing_is_stored(
    redis_url: str, queue_name: str
) -> None:
    rec = Recorder()
    async with Queue(redis_url, name=queue_name, middleware=[rec], max_payload=100) as queue:
        with pytest.raises(PayloadTooLarge):
            await queue.enqueue(tasks.echo, "x" * 1000)
        assert rec.calls == [
            ("before_enqueue", ["tests.tasks.echo"]),
            ("after_enqueue", "PayloadTooLarge"),
        ]
        assert not await queue.redis.keys(f"aq:{{{queue_name}}}:j:*")


class BadHeaders(Middleware):
    def before_enqueue(self, enqueue: Enqueue) -> None:
        enqueue.messages[0].headers["n"] = 1  # type: ignore[assignment]


async def test_headers_that_are_not_strings_are_refused_before_anything_is_sent(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(redis_url, name=queue_name, middleware=[BadHeaders()]) as queue:
        with pytest.raises(ConfigurationError, match="headers must be strings"):
            await queue.enqueue(tasks.add, 1, 2)
        assert not await queue.redis.keys(f"aq:{{{queue_name}}}:j:*")


def test_a_class_or_an_object_without_hooks_is_refused_at_once() -> None:
    with pytest.raises(ConfigurationError, match="instance"):
        Worker([], middleware=[Recorder])
    with pytest.raises(ConfigurationError, match="none of the middleware hooks"):
        Queue(middleware=[object()])
    worker = Worker([])
    with pytest.raises(ConfigurationError):
        worker.add_middleware(Recorder)
    assert worker.middleware == []


class Quiet(Middleware):
    """Knows when it is made that two of its hooks have nothing to do."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.before_attempt = None  # type: ignore[assignment]
        self.on_settled = None  # type: ignore[assignment]

    def after_attempt(self, attempt: Attempt, result: AttemptResult) -> None:
        self.calls.append("after_attempt")

    def on_settled(self, attempt: Attempt, result: AttemptResult) -> None:
        raise AssertionError("set to None on the instance: never called")


def test_a_hook_set_to_none_on_the_instance_is_left_out() -> None:
    from aioqueue._hooks import Hooks

    hooks = Hooks([Quiet()])
    assert (hooks.before_attempt, hooks.on_settled) == ((), ())
    assert [name for _, _, name in hooks.after_attempt] == ["Quiet"]
    silent = Quiet()
    silent.after_attempt = None  # type: ignore[assignment]
    assert not Hooks([silent]).attempts  # accepted, and costs the worker nothing


async def test_a_worker_never_calls_a_hook_set_to_none(redis_url: str, queue_name: str) -> None:
    quiet = Quiet()
    worker = Worker([tasks.add], redis_url=redis_url, queues=[queue_name], middleware=[quiet])
    async with Queue(redis_url, name=queue_name) as queue:
        job = await queue.enqueue(tasks.add, 1, 2)
        async with running(worker):
            assert await job.result(timeout=10) == 3
    assert quiet.calls == ["after_attempt"]


def test_an_installed_middleware_joins_every_queue_and_worker_made_afterwards() -> None:
    from aioqueue.middleware import install, installed, uninstall

    before = Queue()
    rec = Recorder()
    install(rec)
    install(rec)  # twice: still once
    try:
        assert installed().count(rec) == 1
        assert rec in Queue().middleware and rec in Worker([]).middleware
        # after the ones given, and not when one of its class is given already
        mine = Recorder()
        assert Worker([], middleware=[mine]).middleware == [mine]
        other = Broken()
        assert list(Queue(middleware=[other]).middleware) == [other, rec]
    finally:
        uninstall(rec)
    assert rec not in Queue().middleware
    assert rec not in before.middleware


class Waits(Middleware):
    def __init__(self) -> None:
        self.waits: dict[tuple[str, int], float | None] = {}
        self.done = anyio.Event()

    def before_attempt(self, attempt: Attempt) -> None:
        self.waits[(attempt.job_id, attempt.attempt)] = attempt.wait

    def on_settled(self, attempt: Attempt, result: AttemptResult) -> None:
        if len(self.waits) == 3:
            self.done.set()


async def test_an_attempt_knows_how_long_its_job_waited(redis_url: str, queue_name: str) -> None:
    """The claim's reply carries each job's wait (the `started` event's wait_ms)."""
    from aioqueue.admin import Admin

    mw = Waits()
    worker = Worker(
        [tasks.add, tasks.flaky], redis_url=redis_url, queues=[queue_name], middleware=[mw]
    )
    async with Queue(redis_url, name=queue_name) as queue:
        # enqueued before any worker runs: it waits until the worker's first claim
        first = await queue.enqueue(tasks.add, 1, 2)
        flaky = await queue.enqueue(tasks.flaky, 1)
        async with running(worker):
            assert await first.result(timeout=5) == 3
            assert await flaky.result(timeout=5) == 2
            with anyio.fail_after(5):
                await mw.done.wait()
    assert set(mw.waits) == {(first.id, 1), (flaky.id, 1), (flaky.id, 2)}
    async with Admin(redis_url) as admin:
        started = [e for e in await admin.events(queue_name) if e.event == "started"]
    # each attempt's wait is what its `started` event recorded, in seconds
    recorded = {(e.job, e.attempt): int(e.extra["wait_ms"]) / 1000 for e in started}
    assert mw.waits == recorded
    assert all(w is not None and w >= 0 for w in mw.waits.values())
