"""What the CLI shows a person cannot drive their terminal; ``--json`` stays exact; ids and
queue names that could are refused at enqueue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest
import redis

from aioqueue import ConfigurationError, Queue, task_ref
from aioqueue._protocol.keys import QueueKeys
from aioqueue._text import printable
from tests import tasks
from tests.supervised import ROOT, enqueue
from tests.test_cli import (  # the fixtures are used by name
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


# retitles the terminal, clears it, then writes what looks like one more table row;
# then a C1 CSI (0x9b) and a bidi override
EVIL = "x\x1b]0;pwned\x07\x1b[2J\r\nFORGED  row\x9b31m\u202etxt.exe"
# what an operator's terminal must never receive
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


def shows_nothing_raw(text: str) -> None:
    for char in RAW:
        assert char not in text, repr(char)


def test_printable_escapes_controls_format_characters_and_surrogates() -> None:
    assert printable("plain text, é, 漢字, 😀") == "plain text, é, 漢字, 😀"
    assert printable(EVIL) == ("x\\x1b]0;pwned\\x07\\x1b[2J\\r\\nFORGED  row\\x9b31m\\u202etxt.exe")
    assert printable("a\n\tb\x1b", lines=True) == "a\n\tb\\x1b"
    # a lone surrogate (os.listdir's escape of a bad byte) cannot even be written raw
    assert printable("tag\U000e0041 \udcff") == "tag\\U000e0041 \\udcff"


async def _dead_with_evil_text(redis_url: str, queue_name: str) -> str:
    async with Queue(redis_url, name=queue_name) as q:
        job = await q.enqueue(tasks.boom, EVIL)
        await q.enqueue(task_ref(f"evil.task{EVIL}"), 1)  # unknown: dead-lettered, named
    return job.id


def test_jobs_failed_escapes_what_it_shows_and_json_is_exact(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    job_id = anyio.run(_dead_with_evil_text, redis_url, queue_name)
    drain(redis_url, queue_name)
    keys = QueueKeys(queue_name)
    # an id no client can enqueue any more, written into Redis by someone else
    planted = f"id{EVIL}"
    sync_redis.hset(keys.job(planted), mapping={"s": "failed", "a": 1})
    sync_redis.zadd(keys.dead, {planted: 1})
    base = ["jobs", "failed", "--queue", queue_name, "--redis-url", redis_url]

    out = invoke(*base)
    assert out.exit_code == 0, out.output
    shows_nothing_raw(out.stdout)
    lines = out.stdout.splitlines()
    assert len(lines) == 4  # the header and one line per dead job: no forged row
    assert "\\x1b]0;pwned\\x07" in out.stdout and "\\u202e" in out.stdout
    assert any(line.startswith(job_id) for line in lines)
    assert "evil.taskx\\x1b]0;pwned" in out.stdout  # the unknown task's name

    data = json.loads(invoke(*base, "--json").stdout)
    by_id = {d["id"]: d for d in data}
    assert by_id[job_id]["error_message"] == EVIL  # exact, not escaped
    assert planted in by_id


def test_enqueue_wait_escapes_the_result_and_the_failure(redis_url: str, queue_name: str) -> None:
    base = ["--queue", queue_name, "--redis-url", redis_url, "--wait", "--timeout", "10"]
    with worker_thread(redis_url, queue_name):
        out = invoke("enqueue", "tests.tasks:echo", "line one\nline\x1b[2J two", *base)
        assert out.stdout == "line one\nline\\x1b[2J two\n"  # its lines kept, no escape sent
        from click.testing import CliRunner

        from aioqueue._cli.main import cli

        failed = CliRunner().invoke(cli, ["enqueue", "tests.tasks:boom", EVIL, *base])
    assert failed.exit_code == 1
    shows_nothing_raw(failed.stderr)
    assert len(failed.stderr.splitlines()) == 1
    assert "failed: builtins.ValueError: x\\x1b]0;pwned" in failed.stderr


def test_info_escapes_worker_ids_and_hosts(
    redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    keys = QueueKeys(queue_name)
    seconds, _ = sync_redis.time()
    worker = f"w{EVIL}"
    sync_redis.zadd(keys.workers, {worker: int(seconds) * 1000})
    sync_redis.hset(keys.winfo, worker, json.dumps({"host": f"h{EVIL}", "lease": 60}))
    out = invoke("info", "--queue", queue_name, "--redis-url", redis_url)
    assert out.exit_code == 0, out.output
    shows_nothing_raw(out.stdout)
    assert "w" + printable(EVIL) in out.stdout and "h" + printable(EVIL) in out.stdout
    data = json.loads(
        invoke("info", "--queue", queue_name, "--redis-url", redis_url, "--json").stdout
    )
    assert data["queues"][0]["workers"][0]["host"] == f"h{EVIL}"


def test_console_logs_of_a_worker_escape_job_text(redis_url: str, queue_name: str) -> None:
    # the console renderer quotes (repr) a value with spaces in it, but prints one
    # without spaces as it is: a task name is such a value
    no_spaces = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"
    enqueue(redis_url, queue_name, [tasks.boom.call(EVIL), task_ref(no_spaces).call()])
    done = subprocess.run(
        [sys.executable, "-m", "aioqueue", "run", "tests.apps:worker", "--processes", "0",
         "--burst"],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "AIOQUEUE_REDIS_URL": redis_url,
             "TEST_QUEUE": queue_name},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [x for x in done.stderr.splitlines() if "job.failed" in x]
    assert len(lines) == 2 and all("\\x1b]0;pwned\\x07" in x for x in lines)
    assert any("task='evil\\x1b]0;pwned" in x for x in lines)
    shows_nothing_raw(done.stderr)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad",
    [
        "a\x1b[2J",
        "bell\x07",
        "c1\x9b",
        "nel\x85",
        "bidi\u202eexe",
        "zw\u200b",
        "sep\u2028",
        "nul\x00",
    ],
)
async def test_control_characters_in_job_ids_and_queue_names_are_refused(
    redis_url: str, queue_name: str, bad: str
) -> None:
    with pytest.raises(ConfigurationError, match="invalid job id"):
        tasks.add.options(job_id=bad)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        tasks.add.options(queue=bad)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        Queue(redis_url, name=bad)
    async with Queue(redis_url, name=queue_name) as q:
        with pytest.raises(ConfigurationError, match="invalid job id"):
            await q.enqueue(task_ref("tests.tasks.add", job_id=bad), 1, 2)
        with pytest.raises(ConfigurationError, match="invalid job id"):
            q.job(bad)
        with pytest.raises(ConfigurationError, match="invalid queue name"):
            q.job("fine", queue=bad)
    # letters of any script are fine
    assert tasks.add.options(job_id="заказ-42", queue="очередь").defaults.job_id == "заказ-42"
