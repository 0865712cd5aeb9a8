"""What the supervisor decides, apart from the processes it decides about.

These are pure: no clock, no process, no signal. The supervisor loop feeds them
facts (an exit code, how long a child fetched, which slots exist) and acts on
the answer, so each rule is tested without spawning anything.

    restart backoff   consecutive crashes double the delay up to a cap; a child
                      that fetched ``stable_after`` seconds resets the count
    exit decision     what a child's exit means: retired, recycled, drained,
                      replaced during a rolling step, or a crash to back off
    rolling plan      slots to replace one at a time, each once, in order
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["Exit", "ExitFacts", "RestartBackoff", "RollingPlan", "decide_exit"]

RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # seconds of fetching after which a child's exit is not "crash looping"


@dataclass(frozen=True)
class RestartBackoff:
    base: float = 0.5
    cap: float = RESTART_BACKOFF_MAX
    stable_after: float = STABLE_AFTER

    def crashes(self, before: int, fetched_for: float | None) -> int:
        """The crash count after one more exit; ``fetched_for`` is None if it never fetched."""
        if fetched_for is not None and fetched_for >= self.stable_after:
            before = 0
        return before + 1

    def delay(self, crashes: int) -> float:
        # a base above the cap is the operator's explicit wish: honour it
        return float(min(self.base * 2 ** max(crashes - 1, 0), max(self.cap, self.base)))


class Exit(enum.Enum):
    RETIRED = "retired"  # the supervisor asked it to go (scale down, rolling step, memory)
    OLD_DIED = "old_died"  # the process being replaced died first; its successor serves
    STOPPING = "stopping"  # the whole supervisor is stopping
    RECYCLE = "recycle"  # it reached --max-jobs-per-child: replace at once, no backoff
    DRAINED = "drained"  # burst mode: its queues are empty, the slot closes
    CRASHED = "crashed"  # anything else: replace after the backoff


@dataclass(frozen=True)
class ExitFacts:
    code: int
    said: str | None  # the reason the child sent before exiting, if any
    retired: bool  # it was draining at the supervisor's request
    replaced: bool  # it was the old process of a slot mid-replacement
    stopping: bool
    burst: bool


def decide_exit(facts: ExitFacts) -> Exit:
    if facts.retired:
        return Exit.RETIRED
    if facts.replaced:
        return Exit.OLD_DIED
    if facts.stopping:
        return Exit.STOPPING
    if facts.code == 0 and facts.said == "max_jobs":
        return Exit.RECYCLE
    if facts.code == 0 and facts.burst and facts.said == "burst":
        return Exit.DRAINED
    return Exit.CRASHED


class RollingPlan:
    """Slots still to replace, one at a time; a slot queued twice is replaced once."""

    def __init__(self) -> None:
        self._pending: deque[tuple[int, str]] = deque()
        self.active = False

    def add(self, slots: Iterable[int], reason: str) -> None:
        queued = {index for index, _ in self._pending}
        self._pending.extend((i, reason) for i in sorted(slots) if i not in queued)
        self.active = True

    def next(self, replaceable: Callable[[int], bool]) -> tuple[int, str] | None:
        """The next slot to replace now, skipping slots gone or already mid-replacement."""
        while self._pending:
            index, reason = self._pending.popleft()
            if replaceable(index):
                return index, reason
        return None

    def finish(self) -> bool:
        """True once when the plan has run out after being active (to report it done)."""
        done = self.active and not self._pending
        if done:
            self.active = False
        return done
