"""Garbage in a queue's keys never gives an operator a traceback: each command shows what
it can read, marks the rest '?', and ends with one line saying what it met (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner, Result

from aioqueue._cli.main import cli
from aioqueue._protocol.keys import QueueKeys
from tests.redis_server import RedisServer
from tests.supervised import ROOT
from tests.test_cli import (  # the fixtures are used by name
    dead_job,
    logs_off_stdout,  # noqa: F401
)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(out: Result, *fragments: str) -> None:
    assert out.exit_code == 2, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    (line,) = out.stderr.splitlines()
    assert line.startswith("aioqueue: "), line
    for fragment in fragments:
        assert fragment in line, line


def test_jobs_failed_lists_the_good_entries_and_marks_the_bad_ones(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    good = dead_job(redis_url, queue_name, "kaput")
    keys = QueueKeys(queue_name)
    sync_redis.zadd(keys.dead, {"wrong-type": 1, "bad-fields": 2, b"\xff\xfe": 3})
    sync_redis.set(keys.job("wrong-type"), "a string, not a hash")
    sync_redis.hset(keys.job("bad-fields"), mapping={"a": "many", "d": b"\x00junk", "e": "?"})
    base = ["jobs", "failed", "--queue", queue_name, "--redis-url", redis_url]

    out = run(*base)
    one_line_error(out, "3 unreadable entries", "job ")
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert set(rows) == {good, "wrong-type", "bad-fields", "\\xff\\xfe"}
    assert rows[good][2:4] == ["tests.tasks.boom", "1"]  # the good one in full
    assert rows["bad-fields"][2:4] == ["?", "?"]  # task and attempts unreadable
    assert rows["wrong-type"][2] == "?"

    out = run(*base, "--json")
    assert out.exit_code == 2
    by_id = {d["id"]: d for d in json.loads(out.stdout)}
    assert by_id[good]["problem"] is None
    assert "WRONGTYPE" in by_id["wrong-type"]["problem"]
    assert "attempts: not a number" in by_id["bad-fields"]["problem"]
    assert by_id["\\xff\\xfe"]["problem"] == "id is not UTF-8"


def test_a_garbage_dead_set_spoils_only_its_own_queue(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    good = dead_job(redis_url, queue_name)
    other = queue_name + "-junk"
    sync_redis.set(QueueKeys(other).dead, "not a sorted set")
    out = run("jobs", "failed", "--queue", queue_name, "--queue", other, "--redis-url", redis_url)
    one_line_error(out, f"queue {other}", "WRONGTYPE")
    assert good in out.stdout


def test_info_and_check_survive_garbage_in_every_key_they_read(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    keys = QueueKeys(queue_name)
    seconds, _ = sync_redis.time()
    now_ms = int(seconds) * 1000
    sync_redis.rpush(keys.ready, "a", "b")
    sync_redis.set(keys.stats, "not a hash")
    sync_redis.set(keys.sched, "not a sorted set")
    sync_redis.set(keys.finished_in(now_ms // 10_000), "NaN")
    sync_redis.zadd(keys.workers, {"alive": now_ms, "junk-info": now_ms})
    sync_redis.hset(
        keys.winfo,
        mapping={
            "alive": json.dumps({"host": "h1", "running": 1, "concurrency": 4, "lease": 60}),
            "junk-info": '{"running": "lots", "done": [1]}',
        },
    )
    base = ["--queue", queue_name, "--redis-url", redis_url]

    out = run("info", *base)
    one_line_error(out, "unreadable entries")
    line = next(r for r in out.stdout.splitlines() if r.startswith(queue_name + " "))
    assert line.split()[1:4] == ["2", "?", "0"]  # queued read, scheduled garbage, active 0
    assert "alive" in out.stdout and "junk-info" in out.stdout

    data = json.loads(run("info", *base, "--json").stdout)
    problems = data["queues"][0]["problems"]
    assert any(p.startswith("stats: WRONGTYPE") for p in problems)
    assert any(p.startswith("sched: WRONGTYPE") for p in problems)
    assert any(p.startswith("tput:") for p in problems)
    assert any("junk-info: running is not a number" in p for p in problems)

    # a probe: live workers answer yes; the junk is reported, not a reason to restart them
    probe = run("check", *base)
    assert probe.exit_code == 0 and probe.stdout == "ok: 2 worker(s) alive\n"
    assert probe.stderr.startswith("aioqueue: ") and len(probe.stderr.splitlines()) == 1
    # but with the registry itself garbage, nobody can tell: an error, not a "no"
    sync_redis.delete(keys.workers)
    sync_redis.set(keys.workers, "not a sorted set")
    probe = run("check", *base, "--json")
    one_line_error(probe, "unreadable entries")
    assert any("workers: WRONGTYPE" in p for p in json.loads(probe.stdout)["problems"])


def test_a_planted_key_with_an_impossible_queue_name_is_not_a_queue(queue_name: str) -> None:
    server = RedisServer()  # discovery sees every key: a Redis of this test's own
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.rpush(QueueKeys(queue_name).ready, "x")
        client.rpush("aq:{evil\x1b[2J name}:ready", "x")
        client.close()
        out = run("info", "--redis-url", server.url)
    finally:
        server.cleanup()
    assert out.exit_code == 0, out.output
    assert queue_name in out.stdout and "evil" not in out.stdout


def test_a_real_process_prints_one_line_and_no_traceback(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    keys = QueueKeys(queue_name)
    sync_redis.set(keys.dead, "x")
    sync_redis.set(keys.stats, "x")
    commands = (["info"], ["jobs", "failed"], ["jobs", "retry", "--all"], ["jobs", "purge", "a"])
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-m", "aioqueue", *args, "--queue", queue_name],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "AIOQUEUE_REDIS_URL": redis_url},
        )
        assert "Traceback" not in done.stderr
        (line,) = done.stderr.splitlines()
        if args[1:2] == ["purge"]:
            # by id it is the purge Function that meets the planted key: it sets it aside
            assert done.returncode == 1, (args, done.stderr)
            assert line == f"aioqueue: 1 of 1 id(s) are not failed jobs of {queue_name}", line
            assert sync_redis.type(keys.dead) == b"none"
            continue
        assert done.returncode == 2, (args, done.stderr)
        assert line.startswith("aioqueue: ") and "WRONGTYPE" in line, line
