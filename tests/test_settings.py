"""WorkerSettings: frozen, derived values follow the final inputs, bad values refused."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioqueue import ConfigurationError, Worker, task
from aioqueue._cli.runner import RunOptions
from aioqueue._protocol.functions import Claimed
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.executor import Running
from aioqueue._worker.settings import WorkerSettings, available_cpus
from tests import pool_tasks, tasks

ROOT = Path(__file__).resolve().parent.parent


def test_prefetch_is_derived_from_the_final_concurrency() -> None:
    s = WorkerSettings()
    assert (s.concurrency, s.effective_prefetch) == (100, 100)
    assert s.replace(concurrency=10).effective_prefetch == 10
    # one job at a time means one held: no prefetch unless asked for
    assert s.replace(concurrency=1).effective_prefetch == 0
    assert s.replace(concurrency=1, prefetch=3).effective_prefetch == 3
    assert WorkerSettings(prefetch=0).replace(concurrency=50).effective_prefetch == 0


def test_heartbeat_is_derived_from_the_final_lease() -> None:
    s = WorkerSettings()
    assert s.heartbeat_interval == 10.0
    assert s.replace(lease=9).heartbeat_interval == 3.0
    assert s.replace(lease=9, heartbeat=1).heartbeat_interval == 1.0
    with pytest.raises(ConfigurationError, match="shorter than the lease"):
        WorkerSettings(heartbeat=5).replace(lease=5)  # an override under the given heartbeat


def test_pool_size_is_the_cpus_available_unless_given() -> None:
    assert WorkerSettings().pool_size == available_cpus() == len(os.sched_getaffinity(0))
    assert WorkerSettings(process_pool=3).pool_size == 3


def test_cpu_slots_of_the_claim_are_derived_from_the_tasks_kinds() -> None:
    s = WorkerSettings(cpu_slots=2, process_pool=3)
    in_process = Dispatch(s, {t.name: t for t in [tasks.add, tasks.multiply]})
    assert (in_process.cpu_tasks, in_process.cpu_limit) == ((tasks.multiply.name,), 2)
    pooled = Dispatch(s, {pool_tasks.pid_of.name: pool_tasks.pid_of})
    assert pooled.cpu_limit == 3
    both = Dispatch(s, {t.name: t for t in [tasks.multiply, pool_tasks.pid_of]})
    assert both.cpu_limit == 5
    io_only = Dispatch(s, {tasks.add.name: tasks.add})
    assert (io_only.cpu_tasks, io_only.cpu_limit) == ((), 0)


def test_task_kinds() -> None:
    assert tasks.multiply.cpu and not tasks.add.cpu  # def: CPU-bound; async def: not

    @task(cpu=False)
    def blocking_io() -> None: ...

    @task(cpu=True)
    async def hogs_the_loop() -> None: ...

    assert not blocking_io.cpu and hogs_the_loop.cpu
    assert pool_tasks.pid_of.cpu and pool_tasks.pid_of.executor == "process"
    with pytest.raises(ConfigurationError, match="cannot be cpu=False"):
        task(executor="process", cpu=False)(pool_tasks.pid_of.fn)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="executor must be"):
        task(executor="fiber")(pool_tasks.pid_of.fn)  # type: ignore[call-overload]


def claimed(cpu: bool) -> Running:
    return Running(Claimed("q", "id", "t", 1, 0, b"", cpu=cpu))


def test_prefetch_follows_the_mean_of_io_jobs_only() -> None:
    d = Dispatch(WorkerSettings(concurrency=10), {tasks.multiply.name: tasks.multiply})
    assert d.capacity() == 10  # nothing measured yet: long jobs would be hoarded
    d.ran(claimed(cpu=False), 0.001)
    assert d.capacity() == 20
    d.ran(claimed(cpu=False), 0.5)  # the plain mean of the first jobs: (0.001 + 0.5) / 2
    assert d.capacity() == 10
    for _ in range(200):
        d.ran(claimed(cpu=True), 10.0)  # CPU-bound jobs are never prefetched: no say here
    assert d.mean_io_time == pytest.approx(0.2505)


def test_a_cpu_slot_counts_only_where_a_job_would_start_at_once() -> None:
    d = Dispatch(WorkerSettings(concurrency=3), {tasks.multiply.name: tasks.multiply})
    assert (d.cpu_free(), d.run_free()) == (1, 3)
    d.held(claimed(cpu=True))
    assert (d.cpu_free(), d.run_free()) == (0, 2)
    d.released(claimed(cpu=True))
    for _ in range(3):
        d.held(claimed(cpu=False))  # every consumer busy: a CPU job would wait behind them
    assert (d.cpu_free(), d.run_free()) == (0, 0)
    d.released(claimed(cpu=False))
    assert d.cpu_free() == 1


@pytest.mark.parametrize("name", ["lease", "heartbeat", "grace", "job_timeout"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_seconds_reject_nan_inf_and_negatives(name: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=name):
        WorkerSettings(**{name: value})


@pytest.mark.parametrize("name", ["concurrency", "prefetch", "cpu_slots", "process_pool"])
@pytest.mark.parametrize("value", [-1, 1.5, math.nan, True, "4"])
def test_counts_reject_non_integers_and_negatives(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=name):
        WorkerSettings(**{name: value})


def test_zero_is_refused_where_it_means_nothing_would_run() -> None:
    for name in ("lease", "heartbeat", "job_timeout", "concurrency", "cpu_slots", "process_pool"):
        with pytest.raises(ConfigurationError, match=name):
            WorkerSettings(**{name: 0})
    assert WorkerSettings(grace=0, prefetch=0).grace == 0


def test_settings_are_frozen_and_worker_reads_them() -> None:
    worker = Worker([tasks.add], concurrency=7, lease=6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        worker.settings.concurrency = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        worker.concurrency = 1  # type: ignore[misc]
    assert (worker.concurrency, worker.prefetch, worker.heartbeat_interval) == (7, 7, 2.0)
    with pytest.raises(ConfigurationError, match="not a worker setting"):
        worker.configure(concurency=1)


def test_cli_overrides_are_applied_before_anything_is_derived() -> None:
    worker = Worker([tasks.add], concurrency=100, lease=30)
    RunOptions(concurrency=1, lease=6, queues="a, b").apply(worker)
    assert (worker.concurrency, worker.prefetch) == (1, 0)  # was 1 and 100
    assert worker.heartbeat_interval == 2.0
    assert worker.queues == ["a", "b"]
    RunOptions(prefetch=5, cpu_slots=2, process_pool=3).apply(worker)
    s = worker.settings
    assert (s.effective_prefetch, s.cpu_slots, s.pool_size) == (5, 2, 3)
    assert RunOptions(prefetch=5, heartbeat=1.5).child_env() == {
        "AIOQUEUE_PREFETCH": "5",
        "AIOQUEUE_HEARTBEAT": "1.5",
    }


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--heartbeat", "30"], {}, "heartbeat (30.0s) must be shorter than the lease (30.0s)"),
        (["--lease", "nan"], {}, "lease must be a finite number"),
        ([], {"AIOQUEUE_GRACE": "inf"}, "grace must be a finite number"),
    ],
)
def test_run_refuses_bad_values_in_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aioqueue", "run", "tests.apps:worker", "--processes", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
