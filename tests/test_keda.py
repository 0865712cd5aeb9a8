"""The KEDA ScaledObjects of docs/observability.md, checked against a real Redis holding
aioqueue keys: the Redis trigger through the script KEDA's scaler runs, the Prometheus
trigger's query against a real scrape."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from aioqueue import Queue
from aioqueue._protocol.keys import QueueKeys
from aioqueue.admin import Admin
from aioqueue.prometheus import QueueCollector
from tests import tasks
from tests.prom_helpers import parse

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
# KEDA's Redis list scaler reads the trigger's listName as a length chosen by the
# key's type (its docs: a list, a set, a sorted set or a hash; a missing key is 0),
# in one script. Ours, written to that behaviour, not copied: the count the
# ScaledObject scales on.
KEDA_LIST_LENGTH = """
local t = redis.call('TYPE', KEYS[1]).ok
local length_of = {list = 'LLEN', none = 'LLEN', set = 'SCARD', zset = 'ZCARD', hash = 'HLEN'}
if not length_of[t] then return redis.error_reply('ERR no length for a ' .. t) end
return redis.call(length_of[t], KEYS[1])
"""


def scaled_objects() -> dict[str, dict[str, Any]]:
    """The trigger of each ScaledObject on the page, by trigger type."""
    text = (ROOT / "docs" / "observability.md").read_text()
    found: dict[str, dict[str, Any]] = {}
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        doc = yaml.safe_load(block)
        assert doc["kind"] == "ScaledObject" and doc["apiVersion"] == "keda.sh/v1alpha1"
        (trigger,) = doc["spec"]["triggers"]
        found[trigger["type"]] = {**trigger["metadata"], "spec": doc["spec"]}
    assert set(found) == {"redis", "prometheus"}
    return found


async def _fill(redis_url: str, queue_name: str) -> None:
    """7 ready jobs, 2 of them then claimed (active), and 3 delayed."""
    async with Queue(redis_url, name=queue_name) as queue:
        await queue.enqueue_many([tasks.add.call(i, i) for i in range(7)])
        await queue.enqueue_many([tasks.add.options(delay=3600).call(1, 1) for _ in range(3)])
    async with Admin(redis_url) as admin:
        assert len((await admin.scripts.claim(queue_name, 2, "w", 60_000)).jobs) == 2


async def test_the_redis_trigger_counts_the_ready_jobs_with_kedas_script(
    redis_url: str, queue_name: str
) -> None:
    trigger = scaled_objects()["redis"]
    assert trigger["listName"] == QueueKeys("default").ready  # the page names the real key
    await _fill(redis_url, queue_name)
    keys = QueueKeys(queue_name)
    async with Admin(redis_url) as admin:
        ready = await admin.redis.eval(KEDA_LIST_LENGTH, 1, keys.ready)
        delayed = await admin.redis.eval(KEDA_LIST_LENGTH, 1, keys.sched)
        empty = await admin.redis.eval(KEDA_LIST_LENGTH, 1, QueueKeys(queue_name + "-x").ready)
        info = await admin.queue(queue_name)
    assert (ready, delayed, empty) == (5, 3, 0)
    assert (info.queued, info.scheduled) == (ready, delayed)
    # the replicas KEDA asks for: ceil(length / listLength)
    assert math.ceil(ready / int(trigger["listLength"])) == 1
    assert int(trigger["activationListLength"]) < ready


async def test_the_prometheus_trigger_query_reads_the_latency_gauge(
    redis_url: str, queue_name: str
) -> None:
    trigger = scaled_objects()["prometheus"]
    query = trigger["query"]
    m = re.fullmatch(r'max\((?P<name>\w+)\{queue="(?P<queue>[^"]+)"\}\)', query)
    assert m is not None, query
    assert m["queue"] == "default"
    await _fill(redis_url, queue_name)
    async with Admin(redis_url) as admin:
        oldest = (await admin.redis.lindex(QueueKeys(queue_name).ready, -1)).decode()
        now = await admin.now_ms()
        await admin.redis.hset(QueueKeys(queue_name).job(oldest), "q", now - 30_000)
    collector = QueueCollector(redis_url, [queue_name])
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        samples = await anyio.to_thread.run_sync(lambda: parse(generate_latest(registry).decode()))
    finally:
        collector.close()
    # the query's selector, evaluated on the scrape
    selected = [
        s.value for s in samples if s.name == m["name"] and s.labels == {"queue": queue_name}
    ]
    assert len(selected) == 1
    latency = max(selected)
    assert 30 <= latency < 90
    replicas = math.ceil(latency / float(trigger["threshold"]))
    assert 6 <= replicas <= trigger["spec"]["maxReplicaCount"]
    assert latency > float(trigger["activationThreshold"])
