"""The supervisor's settings and the parsing of the values an operator types for them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aioqueue._worker.settings import available_cpus

__all__ = ["SupervisorConfig", "default_processes", "parse_size"]


def default_processes() -> int:
    """The CPUs this process may run on (the affinity mask, not the machine's count):
    the same count a worker's process pool defaults to."""
    return available_cpus()


def parse_size(text: str) -> int:
    """Bytes from ``512M``, ``2G``, ``300000K`` or a bare number of megabytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    raw = text.strip().upper().removesuffix("B")
    unit = units.get(raw[-1:], 0)
    number = raw[:-1] if unit else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M or 2G)") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"size must be a positive number: {text!r}")
    return int(value * (unit or units["M"]))


@dataclass(frozen=True)
class SupervisorConfig:
    target: str
    processes: int
    child_env: dict[str, str] = field(default_factory=dict)
    cli_args: Sequence[str] = ()  # group options for the children (log format, level)
    run_args: Sequence[str] = ()  # options of `run --child` that have no environment variable
    grace: float = 30.0
    lease: float = 30.0
    burst: bool = False
    max_memory: int | None = None
    ping_interval: float = 1.0
    ping_timeout: float = 30.0
    restart_backoff: float = 0.5
    pid_file: Path | None = None
    reload_dirs: Sequence[Path] = ()
    on_child_exit: Callable[[int], None] | None = None  # called with the pid of each that exits
