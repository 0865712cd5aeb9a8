"""The deliveries a worker holds: an abort that arrives before the claim of its job has
answered still stops that job (Redis ran the claim, then the abort, and published the
abort while the claim's reply was on its way to the worker)."""

from __future__ import annotations

import pytest

from aioqueue._protocol.functions import Claimed
from aioqueue._worker import deliveries as deliveries_module
from aioqueue._worker.deliveries import Deliveries
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.settings import WorkerSettings
from tests import tasks


def held_here() -> Deliveries:
    return Deliveries(Dispatch(WorkerSettings(), {tasks.add.name: tasks.add}))


def claimed(job_id: str, token: str = "t1", queue: str = "q") -> Claimed:
    return Claimed(queue=queue, id=job_id, token=token, attempt=1, lost=0, payload=b"")


def test_an_abort_heard_before_its_claim_answered_stops_the_job_when_held() -> None:
    deliveries = held_here()
    deliveries.abort("q", "early")  # nothing held yet
    late, other = deliveries.hold([claimed("early"), claimed("other", "t2")])
    assert late.stop_reason == "abort"
    assert other.stop_reason is None
    # applied once: a later delivery of that id is not stopped by the same message
    (again,) = deliveries.hold([claimed("early", "t3")])
    assert again.stop_reason is None


def test_an_abort_of_a_held_job_stops_it_and_is_not_kept() -> None:
    deliveries = held_here()
    (running,) = deliveries.hold([claimed("j")])
    deliveries.abort("q", "j")
    assert running.stop_reason == "abort"
    deliveries.release(running)
    (next_delivery,) = deliveries.hold([claimed("j", "t2")])
    assert next_delivery.stop_reason is None


def test_an_early_abort_is_kept_only_a_while_and_of_its_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deliveries = held_here()
    now = [1000.0]
    monkeypatch.setattr(deliveries_module, "_clock", lambda: now[0])
    deliveries.abort("q", "a")
    deliveries.abort("q", "b")
    (elsewhere,) = deliveries.hold([claimed("b", queue="other")])
    assert elsewhere.stop_reason is None
    now[0] += deliveries_module.EARLY_ABORT_TTL + 0.1
    (expired,) = deliveries.hold([claimed("a")])
    assert expired.stop_reason is None


def test_aborts_of_jobs_held_elsewhere_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliveries_module, "EARLY_ABORTS_KEPT", 4)
    deliveries = held_here()
    for i in range(10):
        deliveries.abort("q", f"j{i}")
    assert len(deliveries._early_aborts) <= 4
    (newest,) = deliveries.hold([claimed("j9")])
    assert newest.stop_reason == "abort"  # the oldest were dropped, not the newest
