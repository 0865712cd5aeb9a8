"""Testing code that uses aioqueue: a pytest plugin on a real, private Redis.

Enable it in the project's top ``conftest.py``::

    pytest_plugins = ["aioqueue.testing"]

Fixtures: ``aioqueue_redis_server`` (per session), ``aioqueue_redis_url``,
``aioqueue_queue``, ``aioqueue_queue_name``, ``aioqueue_clock`` (per test). In a
test: ``async with run_worker(worker) as w: ... await w.drain()``, and
``await aioqueue_clock.advance(hours=1)`` for time to pass. See docs/testing.md.
"""

from aioqueue.testing._clock import TestClock
from aioqueue.testing._settle import NotSettled
from aioqueue.testing._worker import RunningWorker, run_worker

__all__ = ["NotSettled", "RunningWorker", "TestClock", "run_worker"]

# registered by pytest along with this module
pytest_plugins = ["aioqueue.testing._plugin"]
