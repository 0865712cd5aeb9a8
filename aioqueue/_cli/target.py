"""What ``TARGET`` names: ``module:attribute``, imported from the current directory.

Shared by ``run`` (the supervisor and each child), ``enqueue`` and ``cron``.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import os
import sys
from typing import Any

from aioqueue._worker.worker import Worker
from aioqueue.errors import ConfigurationError
from aioqueue.task import Task

__all__ = ["freeze_imports", "load_target", "load_worker", "run_worker"]


def load_target(spec: str) -> Any:
    """Imports ``module:attribute``; a clear error when either is missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def load_worker(spec: str) -> Worker:
    worker = load_target(spec)
    # a factory is called; a task is callable too, and so is a function that needs
    # arguments: those are a wrong target, not a traceback
    if callable(worker) and not isinstance(worker, Worker | Task):
        try:
            inspect.signature(worker).bind()
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{spec!r} is not a Worker or a function returning one (it takes arguments)"
            ) from None
        worker = worker()
    if not isinstance(worker, Worker):
        raise ConfigurationError(f"{spec!r} is not a Worker (got {type(worker).__name__})")
    return worker


def freeze_imports() -> None:
    """Leaves what the imports made (modules, classes, functions: some 40,000 objects,
    alive for good) out of the garbage collector's full collections, which otherwise walk
    all of it again and again while jobs run: 65 ms per 20,000 no-op jobs here, 4 ms
    frozen. Only for a process the CLI owns: a library does not freeze its host's heap."""
    gc.collect()
    gc.freeze()


def run_worker(worker: Worker, *, use_uvloop: bool = True) -> None:
    import anyio

    freeze_imports()

    async def main() -> None:
        await worker.run(handle_signals=True)

    anyio.run(main, backend_options={"use_uvloop": use_uvloop})
