"""``--reload``: a thread watching source files, apart from the supervisor's loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["start_watching"]


def start_watching(dirs: Sequence[Path], on_change: Callable[[list[str]], None]) -> threading.Event:
    """Calls ``on_change(paths)`` from a daemon thread per batch of changed Python files.

    Returns the event that stops the watcher. ``on_change`` must be thread-safe
    (the supervisor queues the paths and wakes its own loop).
    """
    from watchfiles import PythonFilter, watch  # the optional [reload] extra

    stop = threading.Event()
    names = [str(d) for d in dirs]

    def run() -> None:
        for changes in watch(*names, watch_filter=PythonFilter(), stop_event=stop):
            on_change(sorted(path for _, path in changes))

    threading.Thread(target=run, name="aioqueue-reload", daemon=True).start()
    return stop
