"""The one backoff and the one deadline every loop and bounded call uses (_redis/retry.py)."""

from __future__ import annotations

import anyio
import pytest

from aioqueue._redis.retry import Backoff, deadline
from aioqueue.errors import RedisUnavailable

pytestmark = pytest.mark.anyio


def test_backoff_doubles_from_its_start_up_to_its_cap_and_starts_over_after_reset() -> None:
    backoff = Backoff(0.05, 0.5)
    assert backoff.delay == 0.05  # what a log line reports before the wait
    assert [next(backoff) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.failures == 6
    backoff.reset()
    assert (backoff.delay, backoff.failures) == (0.05, 0)
    assert next(backoff) == 0.05


def test_backoff_with_jitter_stays_in_the_upper_half_of_each_delay() -> None:
    backoff = Backoff(0.02, 0.5, jitter=True)
    bases = [0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.5]
    for base in bases:
        announced = backoff.delay
        taken = next(backoff)
        assert taken == announced  # the delay logged is the one waited
        assert base / 2 <= taken <= base


def test_a_backoff_starting_above_its_cap_waits_its_start_once() -> None:
    # the heartbeat's: the first retry after 50 ms, later ones never past the interval
    backoff = Backoff(0.05, 0.01)
    assert [next(backoff) for _ in range(3)] == [0.05, 0.01, 0.01]


async def test_deadline_turns_a_call_without_answer_into_redis_unavailable() -> None:
    never = anyio.Event()
    with pytest.raises(RedisUnavailable, match=r"^Redis at x did not answer within 0s$"):
        with deadline(0, "Redis at x"):
            await never.wait()


async def test_deadline_lets_the_blocks_own_timeout_error_and_outer_cancels_through() -> None:
    with pytest.raises(TimeoutError, match="the task's own"):
        with deadline(3600):
            raise TimeoutError("the task's own")
    with anyio.CancelScope() as outer:
        with deadline(3600):
            outer.cancel()
            await anyio.Event().wait()
    assert outer.cancelled_caught  # cancelled from outside: not a Redis that did not answer
