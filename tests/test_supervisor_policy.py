"""The supervisor's decisions, without a process: backoff, exits, rolling restarts."""

from __future__ import annotations

import pytest

from aioqueue._supervise import parse_size
from aioqueue._supervise.policy import Exit, ExitFacts, RestartBackoff, RollingPlan, decide_exit


def facts(**overrides: object) -> ExitFacts:
    base: dict[str, object] = {
        "code": 1,
        "said": None,
        "retired": False,
        "replaced": False,
        "stopping": False,
        "burst": False,
    }
    base.update(overrides)
    return ExitFacts(**base)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = RestartBackoff(base=0.5, cap=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_base_above_the_cap_is_kept() -> None:
    assert RestartBackoff(base=60.0, cap=30.0).delay(3) == 60.0


def test_crash_count_resets_after_a_stable_run_only() -> None:
    backoff = RestartBackoff(stable_after=10.0)
    assert backoff.crashes(4, fetched_for=None) == 5  # never fetched: still looping
    assert backoff.crashes(4, fetched_for=9.9) == 5
    assert backoff.crashes(4, fetched_for=10.0) == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"retired": True, "code": -9}, Exit.RETIRED),
        ({"replaced": True}, Exit.OLD_DIED),
        ({"stopping": True, "code": 0}, Exit.STOPPING),
        ({"code": 0, "said": "max_jobs"}, Exit.RECYCLE),
        ({"code": 1, "said": "max_jobs"}, Exit.CRASHED),
        ({"code": 0, "said": "burst", "burst": True}, Exit.DRAINED),
        ({"code": 0, "said": "burst", "burst": False}, Exit.CRASHED),
        ({"code": 0, "said": "stopped"}, Exit.CRASHED),  # nobody asked it to stop
        ({"code": -9}, Exit.CRASHED),
    ],
)
def test_exit_decisions(overrides: dict[str, object], expected: Exit) -> None:
    assert decide_exit(facts(**overrides)) is expected


def test_retired_wins_over_stopping() -> None:
    # a child retired before the stop still counts as retired (its slot is gone)
    assert decide_exit(facts(retired=True, stopping=True)) is Exit.RETIRED


def test_rolling_plan_replaces_each_slot_once_in_order() -> None:
    plan = RollingPlan()
    plan.add([2, 0, 1], "reload")
    plan.add([1, 3], "rolling_restart")  # 1 is queued already: once
    steps = []
    while (step := plan.next(lambda index: True)) is not None:
        steps.append(step)
    assert steps == [(0, "reload"), (1, "reload"), (2, "reload"), (3, "rolling_restart")]
    assert plan.finish() is True
    assert plan.finish() is False  # reported done once


def test_rolling_plan_skips_slots_that_cannot_be_replaced() -> None:
    plan = RollingPlan()
    plan.add([0, 1, 2], "reload")
    assert plan.next(lambda index: index == 2) == (2, "reload")
    assert plan.next(lambda index: True) is None


def test_an_idle_plan_is_never_done() -> None:
    assert RollingPlan().finish() is False


@pytest.mark.parametrize(
    ("text", "expected"), [("512M", 512 << 20), ("2G", 2 << 30), ("300000K", 300000 << 10)]
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "-1G", "nanM", "infG", "lots"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)
