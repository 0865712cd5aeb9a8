"""The ``aioqueue`` commands: human and ``--json`` output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.from_thread
import pytest
import redis
import structlog
from click.testing import CliRunner, Result

from aioqueue import Worker
from aioqueue._cli.main import cli
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.devredis import DevRedis, answers
from tests import tasks
from tests.supervised import ROOT, enqueue, infos

UNREACHABLE = "redis://user:s3cret@127.0.0.1:1/0"
UNREACHABLE_CLUSTER = "redis+cluster://user:s3cret@127.0.0.1:1"


@pytest.fixture(autouse=True)
def logs_off_stdout() -> Iterator[None]:
    """Worker threads log while CliRunner captures stdout: send their lines elsewhere."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stderr__))
    yield
    structlog.configure(**saved)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """For state only Redis holds (a heartbeat written): no event to wait on, so a short poll."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@contextmanager
def worker_thread(redis_url: str, queue_name: str) -> Iterator[Worker]:
    """A real worker on its own event loop in a thread, while a CLI command runs here."""
    worker = Worker(
        [tasks.add, tasks.echo, tasks.boom, tasks.sleepy],
        redis_url=redis_url,
        queues=[queue_name],
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(worker.run)
        try:
            yield worker
        finally:
            portal.call(worker.stop)
            portal.call(worker.stop)
            future.result(timeout=10)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def dead_job(redis_url: str, queue_name: str, message: str = "kaput") -> str:
    (job_id,) = enqueue(redis_url, queue_name, [tasks.boom.call(message)])
    drain(redis_url, queue_name)
    return job_id


def drain(redis_url: str, queue_name: str) -> None:
    worker = Worker([tasks.add, tasks.boom], redis_url=redis_url, queues=[queue_name], burst=True)
    anyio.run(worker.run)


# -- enqueue ---------------------------------------------------------------------------


def test_enqueue_prints_the_job_id(redis_url: str, queue_name: str) -> None:
    out = invoke(
        "enqueue", "tests.tasks:add", "2", "3", "--queue", queue_name, "--redis-url", redis_url
    )
    assert out.exit_code == 0
    job_id = out.stdout.strip()
    (info,) = infos(redis_url, queue_name, [job_id])
    assert info.task == "tests.tasks.add" and info.args == (2, 3)


def test_enqueue_wait_prints_the_result_and_parses_json_args(
    redis_url: str, queue_name: str
) -> None:
    with worker_thread(redis_url, queue_name):
        base = ["--queue", queue_name, "--redis-url", redis_url, "--wait", "--timeout", "10"]
        assert invoke("enqueue", "tests.tasks:add", "2", "3", *base).stdout.strip() == "5"
        out = invoke("enqueue", "tests.tasks:echo", '{"a": [1, 2.5, null]}', *base, "--json")
        assert json.loads(out.stdout) == {
            "id": json.loads(out.stdout)["id"],
            "queue": queue_name,
            "status": "complete",
            "result": {"a": [1, 2.5, None]},
        }
        assert invoke("enqueue", "tests.tasks:echo", "not json", *base).stdout.strip() == "not json"
        out = invoke("enqueue", "tests.tasks:echo", "-k", "value=[true]", *base, "--json")
        assert json.loads(out.stdout)["result"] == [True]


def test_enqueue_wait_on_a_failing_job_exits_1(redis_url: str, queue_name: str) -> None:
    with worker_thread(redis_url, queue_name):
        out = CliRunner().invoke(
            cli,
            ["enqueue", "tests.tasks:boom", "kaput", "--queue", queue_name,
             "--redis-url", redis_url, "--wait", "--timeout", "10"],
        )  # fmt: skip
    assert out.exit_code == 1
    assert "failed: builtins.ValueError: kaput" in out.stderr


# -- info --------------------------------------------------------------------------------


def test_info_shows_depths_workers_and_throughput(redis_url: str, queue_name: str) -> None:
    enqueue(redis_url, queue_name, [tasks.add.call(i, 1) for i in range(7)])
    dead_job(redis_url, queue_name)
    enqueue(redis_url, queue_name, [tasks.add.options(delay=60).call(1, 1) for _ in range(2)])
    enqueue(redis_url, queue_name, [tasks.add.call(1, 1) for _ in range(3)])  # stays queued
    with worker_thread(redis_url, queue_name) as worker:
        client = redis.Redis.from_url(redis_url)
        wait_until(lambda: bool(client.zcard(QueueKeys(queue_name).workers)))
        client.close()
        # queued jobs are served by the worker thread meanwhile; read JSON after it has them
        out = invoke("info", "--queue", queue_name, "--redis-url", redis_url, "--json")
        table = invoke("info", "--redis-url", redis_url)  # discovery finds our queue too
    data = json.loads(out.stdout)
    (q,) = data["queues"]
    assert q["name"] == queue_name
    assert q["scheduled"] == 2 and q["failed"] == 1
    assert q["finished_last_minute"] >= 8  # 7 + the failed one, counted by the Lua finish
    assert q["per_second"] > 0
    assert q["stats"]["complete"] >= 7 and q["stats"]["failed"] == 1
    (w,) = [w for w in q["workers"] if w["id"] == worker.id]
    assert w["alive"] and w["pid"] == os.getpid() and w["concurrency"] == 100
    # other tests leave garbage in their queues on this shared Redis: info shows all
    # and exits 2 for theirs, never for ours
    problems = table.stderr.partition("the rest shown:")[2]
    assert table.exit_code == 0 or (table.exit_code == 2 and queue_name not in problems), (
        table.stdout + table.stderr
    )
    line = next(row for row in table.stdout.splitlines() if row.startswith(queue_name + " "))
    assert line.split()[4] == "1"  # FAILED column
    assert worker.id in table.stdout


def test_info_on_an_empty_redis_queue(redis_url: str, queue_name: str) -> None:
    out = invoke("info", "--queue", queue_name, "--redis-url", redis_url)
    assert out.exit_code == 0
    assert "no workers alive" in out.stdout


# -- jobs ------------------------------------------------------------------------------


def test_jobs_failed_lists_dead_letters(redis_url: str, queue_name: str) -> None:
    job_id = dead_job(redis_url, queue_name, "kaput")
    out = invoke("jobs", "failed", "--queue", queue_name, "--redis-url", redis_url)
    assert out.exit_code == 0
    assert job_id in out.stdout and "tests.tasks.boom" in out.stdout
    assert "builtins.ValueError: kaput" in out.stdout
    js = json.loads(
        invoke("jobs", "failed", "--queue", queue_name, "--redis-url", redis_url, "--json").stdout
    )
    assert js == [
        {
            "id": job_id,
            "queue": queue_name,
            "task": "tests.tasks.boom",
            "attempts": 1,
            "error_type": "builtins.ValueError",
            "error_message": "kaput",
            "failed_at_ms": js[0]["failed_at_ms"],
            "problem": None,
        }
    ]


def test_jobs_retry_and_purge(redis_url: str, queue_name: str, sync_redis: redis.Redis) -> None:
    keys = QueueKeys(queue_name)
    a, b, c = (dead_job(redis_url, queue_name, m) for m in "abc")
    base = ["--queue", queue_name, "--redis-url", redis_url]
    out = invoke("jobs", "retry", a, *base)
    assert out.exit_code == 0 and "requeued 1 job(s)" in out.stdout
    assert sync_redis.lrange(keys.ready, 0, -1) == [a.encode()]
    assert sync_redis.hget(keys.job(a), "s") == b"queued"

    out = CliRunner().invoke(cli, ["jobs", "retry", a, *base])  # no longer failed
    assert out.exit_code == 1 and "1 of 1 id(s) are not failed jobs" in out.stderr
    assert CliRunner().invoke(cli, ["jobs", "retry", *base]).exit_code == 2  # IDs or --all

    out = invoke("jobs", "purge", b, *base, "--json")
    assert json.loads(out.stdout) == {"queue": queue_name, "purged": 1}
    assert not sync_redis.exists(keys.job(b))
    assert json.loads(invoke("jobs", "retry", "--all", *base, "--json").stdout)["requeued"] == 1
    assert sync_redis.lrange(keys.ready, 0, -1) == [c.encode(), a.encode()]
    assert sync_redis.zcard(keys.dead) == 0
    d = dead_job(redis_url, queue_name)  # the drain runs the requeued a and c too: dead again
    assert json.loads(invoke("jobs", "purge", "--all", *base, "--json").stdout)["purged"] == 3
    assert not any(sync_redis.exists(keys.job(j)) for j in (a, c, d))


# -- check -------------------------------------------------------------------------------


def test_check_exits_1_without_a_live_worker_and_0_with_one(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    base = ["check", "--queue", queue_name, "--redis-url", redis_url]
    out = CliRunner().invoke(cli, base)
    assert out.exit_code == 1 and "no worker with a fresh heartbeat" in out.stderr
    with worker_thread(redis_url, queue_name) as worker:
        wait_until(lambda: bool(sync_redis.zcard(QueueKeys(queue_name).workers)))
        assert invoke(*base).stdout.strip() == "ok: 1 worker(s) alive"
        assert invoke(*base, "--this-host").exit_code == 0
        data = json.loads(invoke(*base, "--json").stdout)
        assert data["ok"] is True and data["alive"][0]["id"] == worker.id
    # a stale heartbeat (older than the lease) is not alive
    sync_redis.zadd(QueueKeys(queue_name).workers, {"ghost": 1})
    assert CliRunner().invoke(cli, base).exit_code == 1


# -- errors ------------------------------------------------------------------------------


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioqueue", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "nope.module:task"], "cannot import 'nope.module'"),
        (["enqueue", "tests.tasks:missing"], "'tests.tasks' has no attribute 'missing'"),
        (["enqueue", "tests.apps:worker"], "is not a task"),
        (["enqueue", "tests.tasks:add", "1", "2", "--redis-url", UNREACHABLE], "unavailable"),
        (["info", "--redis-url", UNREACHABLE], "unavailable"),
        (["jobs", "failed", "--redis-url", UNREACHABLE], "unavailable"),
        (["check", "--redis-url", UNREACHABLE], "unavailable"),
        (["info", "--redis-url", UNREACHABLE_CLUSTER], "unavailable"),
        (["check", "--redis-url", UNREACHABLE_CLUSTER], "unavailable"),
        (["cron", "nope.module:worker"], "cannot import 'nope.module'"),
        (["cron", "tests.tasks:add"], "is not a Worker"),
        (["cron", "tests.chaos.jobs:in_process_worker"], "takes arguments"),
    ],
)
def test_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 2, out.output
    assert out.stderr.startswith("aioqueue: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "s3cret" not in out.stderr


def test_real_process_errors_have_no_traceback() -> None:
    bad = run_cli("run", "nope.module:worker", "--processes", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("aioqueue: cannot import 'nope.module'")
    down = run_cli("info", "--redis-url", UNREACHABLE)
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert "user:***@127.0.0.1:1" in down.stderr and "s3cret" not in down.stderr


# -- cron --------------------------------------------------------------------------------


def test_cron_lists_next_fire_times_and_last_ticks(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    seconds, _ = sync_redis.time()
    now_ms = int(seconds) * 1000
    last_ms = now_ms - 5000
    sync_redis.hset(QueueKeys(queue_name).cron, "every-second", last_ms)
    env = {"AIOQUEUE_REDIS_URL": redis_url, "TEST_QUEUE": queue_name}

    human = run_cli("cron", "tests.apps_cron:worker", env=env)
    assert human.returncode == 0 and human.stderr == "", human.stderr
    header, every, slow = human.stdout.splitlines()
    assert header.split() == [
        "NAME", "TASK", "SCHEDULE", "TIMEZONE", "QUEUE", "NEXT", "FIRE", "LAST", "FIRED", "OPTIONS"
    ]  # fmt: skip
    last = datetime.fromtimestamp(last_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert every.startswith("every-second") and last in every and every.split()[-1] == "-"
    assert every.split()[2:10] == ["*"] * 6 + ["UTC", queue_name]
    assert slow.startswith("slow") and slow.split()[-2:] == ["never", "no_overlap"]

    out = run_cli("cron", "tests.apps_cron:worker", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["redis_reachable"] is True and data["error"] is None
    jobs = {j["name"]: j for j in data["jobs"]}
    assert set(jobs) == {"every-second", "slow"}
    assert jobs["every-second"]["last_fired_ms"] == last_ms
    assert jobs["every-second"]["task"] == "tests.sched_tasks.stamp"
    assert jobs["slow"]["last_fired"] is None and jobs["slow"]["no_overlap"] is True
    for job in jobs.values():
        # the next whole second on the Redis clock, read a moment after now_ms
        assert now_ms < job["next_fire_ms"] <= now_ms + 30_000
        assert job["next_fire_ms"] % 1000 == 0
        assert datetime.fromisoformat(job["next_fire"]).timestamp() * 1000 == job["next_fire_ms"]
        assert job["queue"] == queue_name and job["schedule"] == "* * * * * *"


def test_cron_without_redis_still_shows_the_schedule(queue_name: str) -> None:
    env = {"AIOQUEUE_REDIS_URL": UNREACHABLE, "TEST_QUEUE": queue_name}
    human = run_cli("cron", "tests.apps_cron:worker", env=env)
    assert human.returncode == 0, human.stderr
    assert [line.split()[0] for line in human.stdout.splitlines()] == [
        "NAME",
        "every-second",
        "slow",
    ]
    assert [line.split()[-2] for line in human.stdout.splitlines()[1:]] == ["?", "?"]  # unknown
    (note,) = human.stderr.splitlines()
    assert note.startswith("aioqueue: last ticks unknown") and "user:***@127.0.0.1:1" in note
    assert "s3cret" not in human.stderr

    out = run_cli("cron", "tests.apps_cron:worker", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["redis_reachable"] is False and "unavailable" in data["error"]
    assert [j["last_fired"] for j in data["jobs"]] == [None, None]
    assert "s3cret" not in out.stdout


def test_cron_of_a_worker_without_recurring_jobs() -> None:
    out = invoke("cron", "tests.apps:worker")
    assert out.exit_code == 0 and out.stdout == "no recurring jobs in tests.apps:worker\n"
    assert json.loads(invoke("cron", "tests.apps:worker", "--json").stdout)["jobs"] == []


def test_run_in_process_burst(redis_url: str, queue_name: str) -> None:
    ids = enqueue(redis_url, queue_name, [tasks.add.call(i, 2) for i in range(10)])
    done = run_cli(
        "run", "tests.apps:worker", "--processes", "0", "--burst",
        env={"AIOQUEUE_REDIS_URL": redis_url, "TEST_QUEUE": queue_name},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert all(i.status == "complete" for i in infos(redis_url, queue_name, ids))


def test_cli_flag_beats_env_beats_worker(redis_url: str, queue_name: str) -> None:
    other = queue_name + "-flag"
    ids = enqueue(redis_url, other, [tasks.add.call(1, 1)])
    done = run_cli(
        "run", "tests.apps:worker", "--processes", "0", "--burst", "--queues", other,
        env={"AIOQUEUE_REDIS_URL": redis_url, "AIOQUEUE_QUEUES": queue_name, "TEST_QUEUE": "x"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert infos(redis_url, other, ids)[0].status == "complete"


# -- the development Redis -------------------------------------------------------------


def test_dev_redis_starts_with_aof_and_stops(tmp_path: Path) -> None:
    dev = DevRedis(tmp_path / ".aioqueue")
    with dev as url:
        assert answers(url)
        client = redis.Redis.from_url(url)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()
        assert DevRedis(tmp_path / ".aioqueue").start() == url  # a second one reuses it
    assert not answers(url)


@pytest.mark.skipif(answers("redis://localhost:6379/0"), reason="a Redis answers on 6379")
def test_run_dev_starts_a_private_redis(tmp_path: Path) -> None:
    done = run_cli(
        "--log-format", "json", "run", "tests.apps:worker", "--dev", "--burst", "--processes", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [
        json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")
    ]
    assert "devredis.started" in events and "devredis.stopped" in events
    assert (tmp_path / ".aioqueue" / "appendonlydir").exists()


@pytest.mark.skipif(answers("redis://localhost:6379/0"), reason="a Redis answers on 6379")
def test_run_dev_without_redis_server_says_how_to_install(tmp_path: Path) -> None:
    python_dir = Path(sys.executable).parent
    assert shutil.which("redis-server", path=str(python_dir)) is None
    out = run_cli(
        "run", "tests.apps:worker", "--dev", "--processes", "0",
        cwd=tmp_path, env={"PATH": str(python_dir)},
    )  # fmt: skip
    assert out.returncode == 2
    assert "redis-server not found" in out.stderr and "apt-get install redis-server" in out.stderr
