"""The supervisor with real processes and real signals.

Every wait is on an event: a log line of the supervisor or its children (read
from their shared pipe), a Redis key a job pushes to, or a process exit.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from aioqueue import JobStatus
from tests import tasks
from tests.supervised import Factory, Supervised, enqueue, infos, results


@pytest.fixture
def supervise(redis_url: str, queue_name: str) -> Iterator[Factory]:
    started: list[Supervised] = []

    def start(*args: str, **kwargs: Any) -> Supervised:
        sup = Supervised(args, redis_url=redis_url, queue=queue_name, **kwargs)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def wait_started(client: redis.Redis, key: str, n: int) -> list[tuple[int, int]]:
    """The (pid, attempt) of the first ``n`` job starts pushed to ``key`` (BLPOP: no polling)."""
    out = []
    for _ in range(n):
        got = client.blpop([key], timeout=30)
        assert got is not None, f"only {len(out)} of {n} jobs started"
        pid, attempt = got[1].decode().split(":")
        out.append((int(pid), int(attempt)))
    return out


def test_children_start_and_sigterm_drains_in_flight_jobs(
    supervise: Factory, sync_redis: redis.Redis, redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "aq.pid"
    sup = supervise("--processes", "2", "--pid-file", str(pid_file))
    sup.wait_for("supervisor.child_ready", count=2)
    assert pid_file.read_text().strip() == str(sup.proc.pid)
    children = set(sup.ready_pids())
    assert len(children) == 2 and sup.proc.pid not in children

    key = f"{queue_name}:started"
    ids = enqueue(
        redis_url, queue_name, [tasks.signal_and_sleep.call(redis_url, key, 0.5) for _ in range(6)]
    )
    wait_started(sync_redis, key, 6)  # all six in flight
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0
    done = infos(redis_url, queue_name, ids)
    assert [i.status for i in done] == [JobStatus.COMPLETE] * 6
    assert all(i.attempts == 1 for i in done)  # finished in the drain: none handed back
    assert set(results(redis_url, queue_name, ids)) <= children
    assert not pid_file.exists()
    assert not sup.matching("supervisor.child_exited", reason="crashed")


def test_sigkilled_child_is_replaced_and_its_job_completes(
    supervise: Factory, sync_redis: redis.Redis, redis_url: str, queue_name: str
) -> None:
    sup = supervise("--processes", "1", "--restart-backoff", "0.05", env={"TEST_LEASE": "1"})
    sup.wait_for("supervisor.child_ready")
    key = f"{queue_name}:started"
    (job_id,) = enqueue(redis_url, queue_name, [tasks.signal_and_sleep.call(redis_url, key, 0.2)])
    ((pid, attempt),) = wait_started(sync_redis, key, 1)
    assert attempt == 1
    os.kill(pid, signal.SIGKILL)
    (exited,) = sup.wait_for("supervisor.child_exited", pid=pid)
    assert exited["exit"] == "killed by SIGKILL" and exited["restart_in"] == 0.05
    ready = sup.wait_for("supervisor.child_ready", count=2)
    new_pid = ready[1]["pid"]
    assert new_pid != pid
    # the lease (1s) of the dead child's delivery expires, the new child runs it again
    assert wait_started(sync_redis, key, 1) == [(new_pid, 2)]
    assert results(redis_url, queue_name, [job_id]) == [new_pid]
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_sighup_rolling_restart_loses_nothing(
    supervise: Factory, sync_redis: redis.Redis, redis_url: str, queue_name: str
) -> None:
    sup = supervise("--processes", "2")
    sup.wait_for("supervisor.child_ready", count=2)
    old = set(sup.ready_pids())
    key = f"{queue_name}:started"
    ids = enqueue(
        redis_url, queue_name, [tasks.signal_and_sleep.call(redis_url, key, 0.4) for _ in range(4)]
    )
    wait_started(sync_redis, key, 4)
    sup.send(signal.SIGHUP)
    sup.wait_for("supervisor.rolling_restart_done")
    retired = sup.matching("supervisor.child_retired", reason="rolling_restart")
    assert {e["pid"] for e in retired} == old
    assert all(e["exit"] == "exit code 0" for e in retired)
    new = set(sup.ready_pids()) - old
    assert len(new) == 2
    # one slot at a time: the second replacement started after the first old one exited
    starts = sup.matching("supervisor.child_started")[2:]
    assert starts[1]["_at"] >= retired[0]["_at"]
    done = infos(redis_url, queue_name, ids)
    assert [i.status for i in done] == [JobStatus.COMPLETE] * 4
    assert all(i.attempts == 1 for i in done)
    assert sync_redis.llen(key) == 0  # no job started twice
    # the new processes serve
    more = enqueue(redis_url, queue_name, [tasks.whoami.call() for _ in range(4)])
    assert {r["pid"] for r in results(redis_url, queue_name, more)} <= new
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_ttin_and_ttou_change_the_process_count(supervise: Factory) -> None:
    sup = supervise("--processes", "1")
    sup.wait_for("supervisor.child_ready")
    sup.send(signal.SIGTTIN)
    sup.wait_for("supervisor.scaled", processes=2)
    sup.wait_for("supervisor.child_ready", count=2)
    sup.send(signal.SIGTTOU)
    sup.wait_for("supervisor.scaled", processes=1)
    (retired,) = sup.wait_for("supervisor.child_retired", reason="scale_down")
    assert retired["slot"] == 1 and retired["exit"] == "exit code 0"
    sup.send(signal.SIGTTOU)  # never fewer than one
    sup.wait_for("supervisor.scale_refused")
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_max_jobs_per_child_recycles(supervise: Factory, redis_url: str, queue_name: str) -> None:
    ids = enqueue(redis_url, queue_name, [tasks.whoami.call() for _ in range(5)])
    sup = supervise("--processes", "1", "--concurrency", "1", "--max-jobs-per-child", "2")
    done = results(redis_url, queue_name, ids)
    recycled = sup.wait_for("supervisor.recycle", count=2, reason="max_jobs")
    pids = [r["pid"] for r in done]
    assert len(set(pids)) == 3  # 2 + 2 + 1 jobs
    assert all(pids.count(p) <= 2 for p in pids)
    assert {r["pid"] for r in recycled} < set(pids)
    # each child froze what its imports made (aioqueue._cli.target.freeze_imports)
    assert all(r["frozen"] > 10_000 for r in done)
    assert not sup.matching("supervisor.child_exited", reason="crashed")
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_crash_looping_child_backs_off(supervise: Factory) -> None:
    sup = supervise("--processes", "1", "--restart-backoff", "0.05", target="tests.apps:crashing")
    exits = sup.wait_for("supervisor.child_exited", count=4)
    assert [e["crashes"] for e in exits[:4]] == [1, 2, 3, 4]
    assert [e["restart_in"] for e in exits[:4]] == [0.05, 0.1, 0.2, 0.4]
    starts = sup.matching("supervisor.child_started")
    for crash, restart in zip(exits[:3], starts[1:4], strict=True):
        # the supervisor's own records: no restart before its backoff was over
        assert restart["_at"] - crash["_at"] >= crash["restart_in"] * 0.9
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_unresponsive_child_is_killed_and_replaced(supervise: Factory) -> None:
    sup = supervise("--processes", "1", "--ping-timeout", "0.5", "--restart-backoff", "0.05")
    (ready,) = sup.wait_for("supervisor.child_ready")
    os.kill(ready["pid"], signal.SIGSTOP)  # its event loop can no longer answer
    sup.wait_for("supervisor.child_unresponsive", pid=ready["pid"])
    (exited,) = sup.wait_for("supervisor.child_exited", pid=ready["pid"])
    assert exited["reason"] == "unresponsive"
    assert sup.wait_for("supervisor.child_ready", count=2)[1]["pid"] != ready["pid"]
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_child_over_memory_limit_is_replaced(supervise: Factory) -> None:
    sup = supervise("--processes", "1", "--max-memory-per-child", "1M")
    (first,) = sup.wait_for("supervisor.recycle", count=1, reason="memory")
    sup.wait_for("supervisor.child_retired", pid=first["pid"], reason="memory")
    assert len(sup.ready_pids()) >= 2
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_reload_restarts_children_on_code_change(supervise: Factory, tmp_path: Path) -> None:
    app = tmp_path / "reloadapp.py"
    app.write_text("from tests.apps import worker\n")
    sup = supervise(
        "--processes", "1", "--reload", "--reload-dir", str(tmp_path),
        cwd=tmp_path, target="reloadapp:worker",
    )  # fmt: skip
    (ready,) = sup.wait_for("supervisor.child_ready")
    sup.wait_for("supervisor.watching")
    app.write_text("from tests.apps import worker\nVERSION = 2\n")
    sup.wait_for("supervisor.reload")
    sup.wait_for("supervisor.child_retired", pid=ready["pid"], reason="reload")
    sup.send(signal.SIGTERM)
    assert sup.wait() == 0


def test_children_drain_when_the_supervisor_is_killed(supervise: Factory) -> None:
    sup = supervise("--processes", "1")
    (ready,) = sup.wait_for("supervisor.child_ready")
    sup.send(signal.SIGKILL)
    sup.wait_for("worker.supervisor_gone")
    sup.wait_for("worker.stopped")
    sup.wait_eof()  # the child exited too: nobody writes to the log pipe any more
    assert sup.matching("worker.stopped")[0]["worker"].split(":")[1] == str(ready["pid"])


def test_burst_with_processes_exits_once_drained(
    supervise: Factory, redis_url: str, queue_name: str
) -> None:
    ids = enqueue(redis_url, queue_name, [tasks.add.call(i, 1) for i in range(20)])
    sup = supervise("--processes", "2", "--burst")
    assert sup.wait() == 0
    assert results(redis_url, queue_name, ids) == [i + 1 for i in range(20)]
    assert len(sup.matching("supervisor.child_drained")) == 2


def test_second_sigint_stops_fast_and_hands_the_job_back(
    supervise: Factory, sync_redis: redis.Redis, redis_url: str, queue_name: str
) -> None:
    sup = supervise("--processes", "1")
    sup.wait_for("supervisor.child_ready")
    key = f"{queue_name}:started"
    (job_id,) = enqueue(redis_url, queue_name, [tasks.signal_and_sleep.call(redis_url, key, 60)])
    wait_started(sync_redis, key, 1)
    sup.send(signal.SIGINT)
    sup.wait_for("worker.draining")  # the 60 s job holds the drain (grace 30 s)
    sup.send(signal.SIGINT)
    sup.wait_for("supervisor.stopping", fast=True)
    assert sup.wait() == 0
    (info,) = infos(redis_url, queue_name, [job_id])
    assert info.status is JobStatus.QUEUED and info.attempts == 0  # handed back at once
