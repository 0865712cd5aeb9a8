"""The core tests again, on the Redis Cluster: the long run (``AIOQUEUE_CLUSTER=full``).

`make test` runs the representative subset in ``test_cluster.py``; this module
re-collects every test of ``test_core`` with ``redis_url`` pointing at the
cluster, except those that talk to Redis through a plain single-node client.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import tests.test_core as core
from tests.cluster import LocalCluster

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("AIOQUEUE_CLUSTER") != "full", reason="long run: AIOQUEUE_CLUSTER=full"
    ),
]

# these open a plain client from the URL (a task, or the test itself)
PLAIN_CLIENT = {
    "test_abort_running_job_cancels_it_in_the_worker",
    "test_job_info_through_its_states",
    "test_redis_restart_functions_reloaded",
}

globals().update(
    {
        name: fn
        for name, fn in vars(core).items()
        if name.startswith("test_") and name not in PLAIN_CLIENT
    }
)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"use_uvloop": True})


@pytest.fixture
def redis_url(redis_cluster: LocalCluster) -> str:
    return redis_cluster.url
