"""A worker's process pool, with real pool processes: results, errors, and jobs that
must stop being killed (their process replaced), counted from /proc."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from aioqueue import ConfigurationError, JobAborted, JobFailed, JobTimedOut, Queue, Worker, task
from aioqueue._worker.procpool import ProcessPool, check_importable
from aioqueue.serializers import get_serializer
from tests import pool_tasks
from tests.conftest import running

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
POOL = [
    pool_tasks.pid_of,
    pool_tasks.fails,
    pool_tasks.fails_picky,
    pool_tasks.retries_once,
    pool_tasks.hangs,
    pool_tasks.dies,
    pool_tasks.returns_unencodable,
    pool_tasks.pair,
    pool_tasks.sleeps,
]


def pool_processes(root: int | None = None) -> tuple[set[int], set[int]]:
    """(templates, pool processes) that descend from ``root`` (default: this process)."""
    root = os.getpid() if root is None else root
    seen: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if b"aioqueue._worker.poolchild" in cmdline and fields[0] not in ("Z", "X"):
            seen[int(entry)] = int(fields[1])
    templates = {pid for pid, ppid in seen.items() if ppid == root}
    return templates, {pid for pid, ppid in seen.items() if ppid in templates}


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Blocks until process ``pid`` has exited (pidfd: an event, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def pool_worker(redis_url: str, queue_name: str, **kwargs: object) -> Worker:
    return Worker(POOL, redis_url=redis_url, queues=[queue_name], **kwargs)  # type: ignore[arg-type]


async def test_pool_task_runs_in_a_pool_process_of_the_worker(
    redis_url: str, queue_name: str
) -> None:
    async with Queue(redis_url, name=queue_name, serializer="json") as queue:
        worker = pool_worker(redis_url, queue_name, process_pool=2, serializer="json")
        async with running(worker):
            _, pids = pool_processes()
            assert len(pids) == 2
            jobs = [await queue.enqueue(pool_tasks.pid_of, i) for i in range(6)]
            results = [await job.result(timeout=10) for job in jobs]
    assert [r["x"] for r in results] == [0, 2, 4, 6, 8, 10]  # through the json serializer
    assert {r["pid"] for r in results} <= pids
    assert os.getpid() not in {r["pid"] for r in results}
    assert pool_processes() == (set(), set())  # the pool went with the worker


async def test_pool_task_errors_keep_their_type_and_the_pool_traceback(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(pool_worker(redis_url, queue_name, process_pool=1)):
        with pytest.raises(JobFailed) as failed:
            await (await queue.enqueue(pool_tasks.fails, "bad input")).result(timeout=10)
        assert failed.value.exc_type == "builtins.ValueError"
        assert "bad input" in failed.value.exc_message
        assert "raised in process-pool process" in failed.value.remote_traceback
        assert "in fails" in failed.value.remote_traceback  # the pool process's own frame
        # an exception that does not come back whole arrives as a stand-in, named
        with pytest.raises(JobFailed) as picky:
            await (await queue.enqueue(pool_tasks.fails_picky)).result(timeout=10)
        assert "tests.pool_tasks.Picky: 7: no" in picky.value.exc_message
        with pytest.raises(JobFailed) as unencodable:
            await (await queue.enqueue(pool_tasks.returns_unencodable)).result(timeout=10)
        assert unencodable.value.exc_type == "aioqueue.errors.SerializationError"
        # the process lives on after all three
        assert (await (await queue.enqueue(pool_tasks.pid_of, 1)).result(timeout=10))["x"] == 2


async def test_retry_from_a_pool_task(queue: Queue, redis_url: str, queue_name: str) -> None:
    async with running(pool_worker(redis_url, queue_name, process_pool=1)):
        job = await queue.enqueue(pool_tasks.retries_once, redis_url, f"{queue_name}:n")
        assert await job.result(timeout=10) != os.getpid()
        assert (await job.info()).attempts == 2


async def test_a_pool_process_that_dies_fails_its_job_and_is_replaced(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    async with running(pool_worker(redis_url, queue_name, process_pool=1)):
        _, (before,) = pool_processes()
        with pytest.raises(JobFailed) as died:
            await (await queue.enqueue(pool_tasks.dies)).result(timeout=10)
        assert died.value.exc_type == "aioqueue.errors.PoolProcessLost"
        result = await (await queue.enqueue(pool_tasks.pid_of, 1)).result(timeout=10)
        assert result["pid"] != before
        assert pool_processes()[1] == {result["pid"]}


async def test_100_timed_out_pool_jobs_are_killed_and_leave_no_process_behind(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:pids"
    client = redis.Redis.from_url(redis_url)
    try:
        with capture_logs() as logs:
            async with running(pool_worker(redis_url, queue_name, process_pool=2)):
                (template,), first = pool_processes()
                jobs = await queue.enqueue_many(
                    pool_tasks.hangs.call(redis_url, key) for _ in range(100)
                )
                for job in jobs:
                    with pytest.raises(JobTimedOut):
                        await job.result(timeout=30)
                ran = [int(p) for p in client.lrange(key, 0, -1)]
                stopped = [e for e in logs if e["event"] == "pool.process_stopped"]
                killed = {e["pid"] for e in stopped}
                # every process that started a job was stopped at the job's timeout,
                # before its outcome was written (a job that timed out before it
                # reached a process, on a loaded machine, stopped none)
                assert len(ran) == len(set(ran)) and set(ran) <= killed
                assert len(killed) == len(stopped) and first <= killed
                assert all(wait_gone(pid) for pid in killed)
                # two jobs that each wait for the other need both processes: replaced
                pairs = await queue.enqueue_many(
                    pool_tasks.pair.call(redis_url, queue_name) for _ in range(2)
                )
                pids = {await job.result(timeout=30) for job in pairs}
                assert pool_processes() == ({template}, pids) and not pids & killed
        assert wait_gone(template)
        assert pool_processes() == (set(), set())
    finally:
        client.close()


async def test_aborting_a_pool_job_kills_its_process(
    queue: Queue, redis_url: str, queue_name: str
) -> None:
    key = f"{queue_name}:pid"
    client = aioredis.from_url(redis_url, socket_timeout=None)
    try:
        async with running(pool_worker(redis_url, queue_name, process_pool=1)):
            job = await queue.enqueue(pool_tasks.sleeps, redis_url, key)
            _, pid = await client.blpop([key], timeout=30)
            assert await job.abort()
            with pytest.raises(JobAborted):
                await job.result(timeout=30)
            assert wait_gone(int(pid))
            again = await (await queue.enqueue(pool_tasks.pid_of, 1)).result(timeout=10)
            assert again["pid"] != int(pid)
    finally:
        await client.aclose()


async def test_a_pool_function_that_cannot_be_imported_by_name_is_a_clear_error(
    redis_url: str, queue_name: str
) -> None:
    with pytest.raises(ConfigurationError, match="module level"):

        @task(executor="process")
        def nested() -> None: ...

    with pytest.raises(ConfigurationError, match="module level"):
        task(executor="process")(lambda: None)
    with pytest.raises(ConfigurationError, match="plain def"):

        @task(executor="process")
        async def not_a_def() -> None: ...

    def in_main() -> None: ...

    in_main.__qualname__ = "in_main"
    in_main.__module__ = "__main__"
    with pytest.raises(ConfigurationError, match="not in __main__"):
        check_importable(task(executor="process")(in_main))

    def impostor() -> None: ...

    impostor.__qualname__ = "pid_of"  # the module's pid_of is another function
    impostor.__module__ = "tests.pool_tasks"
    worker = Worker([task(executor="process", name="impostor")(impostor)], redis_url=redis_url)
    with pytest.raises(ConfigurationError, match="another object"):
        await worker.run()
    assert pool_processes() == (set(), set())


async def test_pool_start_reports_an_import_failure_of_the_tasks(tmp_path: Path) -> None:
    module = tmp_path / "breaks_in_children.py"
    module.write_text(
        "import os\n"
        "from aioqueue import task\n"
        "if os.environ.get('BREAK_CHILD') == '1':\n"
        "    raise RuntimeError('this module refuses to load here')\n"
        "@task(executor='process')\n"
        "def f() -> None: ...\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import breaks_in_children  # type: ignore[import-not-found]

        os.environ["BREAK_CHILD"] = "1"  # the pool's template imports it afresh
        with pytest.raises(ConfigurationError, match="refuses to load"):
            async with ProcessPool([breaks_in_children.f], 1, get_serializer("msgpack")):
                pass
    finally:
        os.environ.pop("BREAK_CHILD", None)
        sys.path.remove(str(tmp_path))
    assert pool_processes() == (set(), set())


@pytest.fixture
def pool_worker_process(redis_url: str, queue_name: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import anyio\n"
        "from aioqueue import Worker\n"
        "from tests import pool_tasks\n"
        f"w = Worker([pool_tasks.pid_of], redis_url={redis_url!r}, queues=[{queue_name!r}],"
        " process_pool=2)\n"
        "async def main():\n"
        "    async with anyio.create_task_group() as tg:\n"
        "        await tg.start(w.run)\n"
        "        print('ready', flush=True)\n"
        "anyio.run(main)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


async def test_a_sigkilled_worker_takes_its_pool_with_it(
    pool_worker_process: subprocess.Popen[bytes],
) -> None:
    assert pool_worker_process.stdout is not None
    line = b""
    while line != b"ready\n":  # the worker's log lines come first
        line = await anyio.to_thread.run_sync(pool_worker_process.stdout.readline)
        assert line, "the worker exited before it was ready"
    templates, pids = pool_processes(pool_worker_process.pid)
    assert len(templates) == 1 and len(pids) == 2
    os.kill(pool_worker_process.pid, signal.SIGKILL)
    pool_worker_process.wait(10)
    assert all(wait_gone(pid) for pid in templates | pids)


class _SerializerWithState:
    name = "stateful"

    def __init__(self, level: int) -> None:
        self.level = level

    def dumps(self, value: object) -> bytes:
        return b""

    def loads(self, data: bytes) -> object:
        return None


class PlainSerializer:
    """A custom serializer the pool can make in its processes: importable, no arguments."""

    name = "plain"

    def dumps(self, value: object) -> bytes:
        return get_serializer("json").dumps(value)

    def loads(self, data: bytes) -> object:
        return get_serializer("json").loads(data)


def test_a_custom_serializer_crosses_by_class_and_must_take_no_arguments() -> None:
    from aioqueue._worker.procpool import _serializer_spec

    assert _serializer_spec(get_serializer("msgpack")) == ["name", "msgpack"]
    assert _serializer_spec(PlainSerializer()) == [
        "class",
        ["tests.test_procpool", "PlainSerializer"],
    ]
    with pytest.raises(ConfigurationError, match="take no arguments"):
        _serializer_spec(_SerializerWithState(3))


def test_exception_records_rebuild_type_args_and_attributes() -> None:
    from aioqueue._worker.poolchild import error_from_record, error_record
    from aioqueue.errors import Retry

    retry = error_from_record(error_record(Retry(defer=5)))
    assert isinstance(retry, Retry) and retry.defer == 5
    oserr = error_from_record(error_record(FileNotFoundError(2, "gone")))
    assert isinstance(oserr, FileNotFoundError) and (oserr.errno, oserr.strerror) == (2, "gone")
    picky = error_from_record(error_record(pool_tasks.Picky(7, "no")))
    assert type(picky) is RuntimeError and "tests.pool_tasks.Picky: 7: no" in str(picky)
    with pytest.raises(TypeError, match="not an exception class"):
        error_from_record(get_serializer("msgpack").dumps(["os", "getcwd", [], {}]))


def test_aioqueue_imports_pickle_only_in_its_opt_in_serializer() -> None:
    """The default path must be safe with an untrusted Redis: no pickle anywhere else."""
    import ast

    import aioqueue

    root = Path(aioqueue.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "pickle" or n.startswith("pickle.") for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {"serializers.py"}
