"""OpenTelemetry stays optional: the core never imports it, and works without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# a fresh interpreter in which `import opentelemetry...` fails as if it were not
# installed, and each attempt of aioqueue's own code to import it is recorded (redis-py
# tries one of its own, guarded, for its optional metrics: not ours to judge)
_BLOCKED = textwrap.dedent(
    """
    import importlib.abc, importlib.util, os, sys, traceback

    # found, not imported: nothing may be imported before the finder is in place
    OURS = importlib.util.find_spec("aioqueue").submodule_search_locations[0] + os.sep
    tried = []

    class NoOpenTelemetry(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                frames = [f for f in traceback.extract_stack() if "<frozen" not in f.filename]
                importer = frames[-2].filename  # [-1] is this method
                if importer.startswith(OURS):
                    tried.append((name, importer))
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())
    """
)


def run(code: str, redis_url: str = "") -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "AIOQUEUE_REDIS_URL": redis_url},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_core_path_runs_a_job_without_ever_importing_opentelemetry(
    redis_url: str, queue_name: str
) -> None:
    out = run(
        f"""
        import asyncio, os
        import aioqueue, aioqueue.logging, aioqueue.admin, aioqueue.testing
        from aioqueue import Queue, Worker
        from tests import tasks

        aioqueue.logging.configure(fmt="json", level="warning")

        async def main():
            async with Queue(name={queue_name!r}) as queue:
                job = await queue.enqueue(tasks.add, 2, 3)
                worker = Worker(
                    [tasks.add],
                    redis_url=os.environ["AIOQUEUE_REDIS_URL"],
                    queues=[{queue_name!r}],
                    burst=True,
                )
                await worker.run()
                print("result", await job.result(timeout=10))

        asyncio.run(main())
        print("tried", tried)
        """,
        redis_url,
    )
    assert "result 5" in out
    assert "tried []" in out


def test_aioqueue_otel_without_the_extra_says_what_to_install() -> None:
    out = run(
        """
        try:
            import aioqueue.otel
        except ImportError as error:
            print(error)
        """
    )
    assert "pip install 'aioqueue[otel]'" in out
