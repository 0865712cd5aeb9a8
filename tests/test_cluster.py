"""The core paths on a real Redis Cluster (3 primaries + 3 replicas), and a failover."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from typing import Any

import anyio
import pytest

from aioqueue import (
    ConfigurationError,
    JobFailed,
    JobNotFound,
    JobStatus,
    NotReplicated,
    Queue,
    Worker,
)
from aioqueue import admin as admin_module
from aioqueue._protocol.keys import QueueKeys, queue_prefix
from aioqueue._redis.cluster import parse_cluster_url
from aioqueue.admin import Admin
from tests import tasks
from tests.cluster import LocalCluster, command
from tests.conftest import abort_running_sleepy_job, running
from tests.failover import outcomes, run_through_failover
from tests.supervised import enqueue
from tests.test_cli import dead_job, run_cli, wait_until, worker_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    # one backend: the event loop is not what these tests are about, the cluster is
    return ("asyncio", {"use_uvloop": True})


def queues_on_distinct_primaries(cluster: LocalCluster, n: int) -> list[str]:
    names: list[str] = []
    owners: set[int] = set()
    while len(names) < n:
        name = f"c-{secrets.token_hex(4)}"
        owner = cluster.primary_for(queue_prefix(name)).port
        if owner not in owners:
            owners.add(owner)
            names.append(name)
    return names


def make_worker(url: str, queues: list[str], **kwargs: Any) -> Worker:
    all_tasks = [tasks.add, tasks.multiply, tasks.boom, tasks.flaky, tasks.sleepy]
    return Worker(all_tasks, redis_url=url, queues=queues, **kwargs)


def fcall_counts(cluster: LocalCluster) -> dict[str, int]:
    """Calls per command on all live nodes, summed (from INFO commandstats)."""
    totals: dict[str, int] = {}
    for node in cluster.nodes:
        if not node.alive:
            continue
        for line in command(node.port, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, stats = line[8:].partition(":")
                calls = int(stats.split(",")[0].split("=")[1])
                totals[name] = totals.get(name, 0) + calls
    return totals


def test_cluster_url_forms() -> None:
    nodes, opts = parse_cluster_url("redis+cluster://u:p%40ss@h1:7000,h2:7001?client_name=x")
    assert nodes == [("h1", 7000), ("h2", 7001)]
    assert opts == {"username": "u", "password": "p@ss", "client_name": "x"}
    assert parse_cluster_url("rediss+cluster://h:1")[1] == {"ssl": True}
    for bad in ("redis+cluster://h", "redis+cluster://h:1/3", "redis+cluster://h:1?db=2"):
        with pytest.raises(ConfigurationError):
            parse_cluster_url(bad)


async def test_round_trip_on_queues_in_different_slots(redis_cluster: LocalCluster) -> None:
    url = redis_cluster.url
    a, b = queues_on_distinct_primaries(redis_cluster, 2)
    async with Queue(url, name=a) as queue, running(make_worker(url, [a, b])):
        job = await queue.enqueue(tasks.add, 2, 3)
        assert await job.result(timeout=5) == 5
        other = await queue.enqueue(tasks.multiply.options(queue=b), 4, 5)
        assert await other.result(timeout=5) == 20
        info = await other.info()
        assert info.status is JobStatus.COMPLETE


async def test_results_of_many_queues_share_one_subscriber_per_node(
    redis_cluster: LocalCluster,
) -> None:
    url = redis_cluster.url
    names = [f"m-{secrets.token_hex(4)}" for _ in range(12)]
    async with Queue(url, name=names[0]) as queue, running(make_worker(url, names)):
        jobs = [await queue.enqueue(tasks.add.options(queue=n), i, 1) for i, n in enumerate(names)]
        assert [await job.result(timeout=10) for job in jobs] == list(range(1, 13))
        waiter = queue.waiter
        primaries = {redis_cluster.primary_for(queue_prefix(n)).port for n in names}
        assert len(primaries) > 1
        # one shard-channel subscriber per node that owns a queue, not one per queue
        assert getattr(waiter, "subscribers", None) == len(primaries)


async def test_fcall_is_routed_without_asking_the_server_for_keys(
    redis_cluster: LocalCluster,
) -> None:
    (a,) = queues_on_distinct_primaries(redis_cluster, 1)
    async with Queue(redis_cluster.url, name=a) as queue:
        before = fcall_counts(redis_cluster)
        for i in range(20):
            await queue.enqueue(tasks.add, i, i)
        after = fcall_counts(redis_cluster)
    assert after.get("fcall", 0) - before.get("fcall", 0) == 20
    assert after.get("command|getkeys", 0) == before.get("command|getkeys", 0)


async def test_bulk_enqueue_across_queues_in_different_slots(redis_cluster: LocalCluster) -> None:
    url = redis_cluster.url
    names = queues_on_distinct_primaries(redis_cluster, 3)
    async with Queue(url, name=names[0]) as queue:
        jobs = await queue.enqueue_many(
            tasks.add.options(queue=names[i % 3]).call(i, 1) for i in range(300)
        )
        assert {job.queue for job in jobs} == set(names)
        async with running(make_worker(url, names)):
            with anyio.fail_after(20):
                results = [await job.result() for job in jobs]
    assert results == [i + 1 for i in range(300)]


def test_info_and_check_without_queue_find_queues_on_every_primary(
    redis_cluster: LocalCluster,
) -> None:
    """`aioqueue info`, `jobs failed` and `check` with no --queue, as real processes, on
    a cluster URL: queues on different primaries are all found, each with its counts."""
    url = redis_cluster.url
    a, b = queues_on_distinct_primaries(redis_cluster, 2)
    dead_id = dead_job(url, a)  # a: one failed job, counted as finished
    enqueue(url, a, [tasks.add.call(i, 1) for i in range(3)])
    enqueue(url, b, [tasks.add.call(i, 1) for i in range(5)])
    enqueue(url, b, [tasks.add.options(delay=600).call(1, 1) for _ in range(2)])

    out = run_cli("info", "--json", "--redis-url", url)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["discovery_truncated"] is False
    found = {q["name"]: q for q in data["queues"] if q["name"] in (a, b)}
    counts = {
        name: (q["queued"], q["scheduled"], q["active"], q["failed"], q["finished_last_minute"])
        for name, q in found.items()
    }
    assert counts == {a: (3, 0, 0, 1, 1), b: (5, 2, 0, 0, 0)}
    assert found[a]["stats"]["failed"] == 1

    table = run_cli("info", "--redis-url", url)
    assert table.returncode == 0, table.stderr
    rows = {
        cells[0]: cells[1:5]
        for cells in map(str.split, table.stdout.splitlines())
        if cells and cells[0] in (a, b)
    }
    assert rows == {a: ["3", "0", "0", "1"], b: ["5", "2", "0", "0"]}

    out = run_cli("jobs", "failed", "--json", "--redis-url", url)
    assert out.returncode == 0, out.stderr
    assert [(d["id"], d["queue"]) for d in json.loads(out.stdout) if d["queue"] in (a, b)] == [
        (dead_id, a)
    ]

    # one worker per queue: `check` reports both only if it found both queues
    with worker_thread(url, a) as worker_a, worker_thread(url, b) as worker_b:
        for name, worker in ((a, worker_a), (b, worker_b)):
            key = QueueKeys(name).workers
            wait_until(
                lambda key=key, worker=worker: bool(
                    command(redis_cluster.primary_for(key).port, "ZSCORE", key, worker.id).strip()
                )
            )
        out = run_cli("check", "--json", "--redis-url", url)
        human = run_cli("check", "--redis-url", url)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] is True
    alive = {w["id"]: w["queue"] for w in data["alive"]}
    assert alive[worker_a.id] == a and alive[worker_b.id] == b
    assert human.returncode == 0 and human.stdout.startswith("ok: "), human.stderr


async def test_discovery_scans_every_primary_within_one_budget(
    redis_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_cluster.url
    names = queues_on_distinct_primaries(redis_cluster, 3)
    async with Queue(url, name=names[0]) as queue:
        await queue.enqueue_many(tasks.add.options(queue=n).call(1, 1) for n in names)
    async with Admin(url) as admin:
        found, truncated = await admin.discover()
        assert set(names) <= set(found) and not truncated
        # fewer calls than primaries: the scan cannot have looked everywhere, and says so
        monkeypatch.setattr(admin_module, "SCAN_CALLS_MAX", 2)
        assert (await admin.discover())[1] is True


async def test_retry_then_dead_letter(redis_cluster: LocalCluster) -> None:
    url = redis_cluster.url
    (a,) = queues_on_distinct_primaries(redis_cluster, 1)
    async with Queue(url, name=a) as queue, running(make_worker(url, [a])):
        assert await (await queue.enqueue(tasks.flaky, 2)).result(timeout=10) == 3
        dead = await queue.enqueue(tasks.boom, "kaput")
        with pytest.raises(JobFailed):
            await dead.result(timeout=10)
        ids = await queue.read(lambda r: r.zrange(QueueKeys(a).dead, 0, -1))
    assert ids == [dead.id.encode()]


async def test_abort_running_job(redis_cluster: LocalCluster) -> None:
    url = redis_cluster.url
    (a,) = queues_on_distinct_primaries(redis_cluster, 1)
    async with Queue(url, name=a) as queue, running(make_worker(url, [a])):
        await abort_running_sleepy_job(queue)


async def test_worker_on_two_slots_blocks_idle_and_wakes_at_once(
    redis_cluster: LocalCluster,
) -> None:
    url = redis_cluster.url
    a, b = queues_on_distinct_primaries(redis_cluster, 2)
    async with Queue(url, name=a) as queue, running(make_worker(url, [a, b])):
        await (await queue.enqueue(tasks.add, 0, 0)).result(timeout=5)  # warm: subscriptions up
        await anyio.sleep(0.3)
        before = fcall_counts(redis_cluster).get("fcall", 0)
        await anyio.sleep(1.0)  # idle: the worker blocks, it does not poll
        assert fcall_counts(redis_cluster).get("fcall", 0) - before <= 1
        for name in (b, a, b):
            started = time.perf_counter()
            job = await queue.enqueue(tasks.add.options(queue=name), 1, 1)
            assert await job.result(timeout=5) == 2
            # woken, not found by the next look: an idle worker looks every IDLE_WAIT (5 s);
            # half of that tells the two apart on a loaded machine
            assert time.perf_counter() - started < 2.5
            await anyio.sleep(0.2)  # idle again between jobs


async def test_delayed_job_fires_when_due(redis_cluster: LocalCluster) -> None:
    url = redis_cluster.url
    a, b = queues_on_distinct_primaries(redis_cluster, 2)
    async with Queue(url, name=a) as queue, running(make_worker(url, [a, b])):
        started = time.monotonic()
        job = await queue.enqueue(tasks.add.options(queue=b, delay=0.3), 1, 2)
        assert await job.result(timeout=5) == 3
        assert 0.3 <= time.monotonic() - started < 1.5


async def test_library_is_reloaded_on_a_primary_that_lost_it(redis_cluster: LocalCluster) -> None:
    (a,) = queues_on_distinct_primaries(redis_cluster, 1)
    primary = redis_cluster.primary_for(queue_prefix(a))
    async with Queue(redis_cluster.url, name=a) as queue:
        command(primary.port, "FUNCTION", "FLUSH")
        assert command(primary.port, "FUNCTION", "LIST").strip() == ""
        job = await queue.enqueue(tasks.add, 1, 1)  # meets "Function not found", reloads
        assert job.created
        assert "aioqueue_" in command(primary.port, "FUNCTION", "LIST")


async def test_resharding_mid_job_the_result_and_new_jobs_follow_the_slot(
    redis_cluster: LocalCluster,
) -> None:
    """A queue's slot moves to another primary while its job runs and a client
    waits: the finish call follows MOVED, the client's sharded subscription is
    dropped by Redis and remade on the new owner, the idle worker's wait moves."""
    url = redis_cluster.url
    a, b = queues_on_distinct_primaries(redis_cluster, 2)
    async with Queue(url, name=a) as queue, running(make_worker(url, [a])):
        job = await queue.enqueue(tasks.sleepy, 1.0)
        with anyio.fail_after(10):
            while await job.status() is not JobStatus.ACTIVE:
                await anyio.sleep(0.02)
        target = redis_cluster.primary_for(queue_prefix(b))
        await anyio.to_thread.run_sync(redis_cluster.move_slot, queue_prefix(a), target)
        assert redis_cluster.primary_for(queue_prefix(a)) is target
        assert await job.result(timeout=10) == "slept"
        await anyio.sleep(0.3)  # the worker is idle again, blocked on the new owner
        assert await (await queue.enqueue(tasks.add, 1, 1)).result(timeout=5) == 2


async def test_primary_killed_mid_run_workers_and_clients_follow(
    redis_cluster: LocalCluster,
) -> None:
    """SIGKILL the primary of a queue's slot while jobs flow: its replica takes over,
    the worker and both clients follow it. Every durable enqueue that returned is
    done; plain ones acknowledged just before the kill may be lost (counted)."""
    url = redis_cluster.url
    a, b = queues_on_distinct_primaries(redis_cluster, 2)
    primary = redis_cluster.primary_for(queue_prefix(a))
    try:
        async with (
            Queue(url, name=a, timeout=2) as plain,
            Queue(url, name=a, timeout=2, durable=True) as durable,
            running(make_worker(url, [a, b], lease=2)),
        ):
            plain_run, durable_run = await run_through_failover(
                [plain, durable], primary.kill, redis_cluster.heal
            )
            assert redis_cluster.primary_for(queue_prefix(a)) is not primary
            _, lost = await outcomes(durable_run.before + durable_run.after, 30)
            assert lost == 0, f"{lost} durable jobs lost"
            _, lost = await outcomes(plain_run.after, 30)
            assert lost == 0
            _, plain_lost = await outcomes(plain_run.before, 30)
            print(
                f"plain: {len(plain_run.before)} acked before the kill, {plain_lost} lost;"
                f" durable: {len(durable_run.before)} before, 0 lost"
            )
            # the other queue's shard never failed
            job = await plain.enqueue(tasks.add.options(queue=b), 2, 2)
            assert await job.result(timeout=10) == 4
    finally:
        redis_cluster.heal()


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("AIOQUEUE_CLUSTER") != "full",
    reason="long run (AIOQUEUE_CLUSTER=full): failed ~1 run in 8 on the 2-core machine",
)
async def test_without_durable_an_acknowledged_enqueue_is_lost_in_a_failover(
    redis_cluster: LocalCluster,
) -> None:
    """Deterministic: the replica is cut off, then the primary dies. Plain enqueues
    were acknowledged and are gone after the failover; a durable one raised."""
    url = redis_cluster.url
    (a,) = queues_on_distinct_primaries(redis_cluster, 1)
    primary = redis_cluster.primary_for(queue_prefix(a))
    replica = redis_cluster.replica_of(primary)
    try:
        async with (
            Queue(url, name=a, timeout=2) as plain,
            Queue(url, name=a, timeout=5, durable=True, replica_timeout=0.2) as durable,
        ):
            replica.signal(signal.SIGSTOP)
            command(primary.port, "CLIENT", "KILL", "TYPE", "replica")
            acked = [await plain.enqueue(tasks.add, i, i) for i in range(10)]
            with pytest.raises(NotReplicated) as caught:
                await durable.enqueue(tasks.add, 1, 1)
            assert len(caught.value.job_ids) == 1
            primary.kill()
            replica.signal(signal.SIGCONT)
            with anyio.fail_after(30):
                while True:
                    try:
                        await plain.enqueue(tasks.add, 0, 0)
                        break
                    except Exception:
                        await anyio.sleep(0.1)
            for job in acked:
                with pytest.raises(JobNotFound):
                    await job.status()
    finally:
        replica.signal(signal.SIGCONT)
        redis_cluster.heal()
