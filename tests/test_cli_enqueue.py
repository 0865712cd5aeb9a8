"""``aioqueue enqueue`` signs for workers that verify, and says so clearly when a
worker set its job aside."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio.from_thread
from click.testing import CliRunner

from aioqueue import Worker
from aioqueue._cli.main import cli
from tests import tasks
from tests.test_cli import logs_off_stdout  # noqa: F401 - a fixture, used by name

KEY = "the-signing-key"


@contextmanager
def signing_worker(redis_url: str, queue_name: str) -> Iterator[Worker]:
    worker = Worker(
        [tasks.add, tasks.boom], redis_url=redis_url, queues=[queue_name], signing_key=KEY
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(worker.run)
        try:
            yield worker
        finally:
            portal.call(worker.stop)
            portal.call(worker.stop)
            future.result(timeout=10)


def test_enqueue_signs_with_a_flag_a_variable_or_a_file(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    base = ["enqueue", "tests.tasks:add", "2", "3", "--queue", queue_name,
            "--redis-url", redis_url, "--wait", "--timeout", "10"]  # fmt: skip
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    with signing_worker(redis_url, queue_name):
        flag = CliRunner().invoke(cli, [*base, "--signing-key", KEY])
        env = CliRunner(env={"AIOQUEUE_SIGNING_KEY": KEY}).invoke(cli, base)
        from_file = CliRunner().invoke(cli, [*base, "--signing-key-file", str(key_file)])
    for out in (flag, env, from_file):
        assert out.exit_code == 0, out.output
        assert out.stdout == "5\n"


def test_an_unsigned_job_set_aside_by_the_worker_is_reported_as_such(
    redis_url: str, queue_name: str
) -> None:
    base = ["enqueue", "tests.tasks:add", "2", "3", "--queue", queue_name,
            "--redis-url", redis_url, "--wait", "--timeout", "2"]  # fmt: skip
    with signing_worker(redis_url, queue_name):
        unsigned = CliRunner().invoke(cli, base)
        wrong = CliRunner().invoke(cli, [*base, "--signing-key", "another key"])
    assert unsigned.exit_code == 1
    (line,) = unsigned.stderr.splitlines()
    assert "was set aside by a worker" in line and line.endswith(": job is not signed"), line
    assert f"aq:{{{queue_name}}}:garbage:j:" in line
    assert wrong.exit_code == 1
    assert wrong.stderr.strip().endswith(
        "job signature does not match its queue, id, lock and payload under any signing key"
    )


def test_signing_key_and_file_together_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY)
    out = CliRunner().invoke(
        cli,
        ["enqueue", "tests.tasks:add", "1", "2", "--signing-key", KEY,
         "--signing-key-file", str(tmp_path / "key")],
    )  # fmt: skip
    assert out.exit_code == 2 and "not both" in out.stderr


def test_an_unreadable_key_file_is_one_line(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        cli, ["enqueue", "tests.tasks:add", "1", "2", "--signing-key-file", str(tmp_path / "no")]
    )
    assert out.exit_code == 2
    assert out.stderr.startswith("aioqueue: cannot read the signing key")
