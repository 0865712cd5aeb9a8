"""Reading a /metrics page the way Prometheus does (prometheus_client's own parser)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

# every label the contract (docs/reference/metrics.md) names, and le of the histograms
LABELS = {"queue", "task", "outcome", "state", "error", "le"}


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        return parse(reply.read().decode())


def scrape_until(port: int, ready: Callable[[list[Sample]], bool], timeout: float = 30) -> None:
    """Scrapes until ``ready`` holds: a worker hands its counts over in batches (at most
    20 ms apart), so a count shows on /metrics some time after its job began; the
    supervisor offers no event for it."""
    deadline = time.monotonic() + timeout
    while not ready(samples := scrape(port)):
        assert time.monotonic() < deadline, by(samples, "aioqueue_jobs_started_total", "task")
        time.sleep(0.02)


def parse(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def by(samples: Iterable[Sample], name: str, label: str, **labels: str) -> dict[str, float]:
    """``name`` summed per value of ``label`` (zeros left out)."""
    out: dict[str, float] = {}
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
    return {k: v for k, v in out.items() if v}


def assert_no_job_ids(samples: Iterable[Sample], job_ids: Iterable[Any]) -> None:
    ids = set(job_ids)
    for s in samples:
        if s.name.startswith("aioqueue_"):
            assert set(s.labels) <= LABELS, s
            assert not ids & set(s.labels.values()), s
