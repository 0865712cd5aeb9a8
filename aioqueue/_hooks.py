"""The middleware of a Queue or a Worker, compiled once into a tuple per hook.

A hook the middleware does not override, or sets to None on the instance (one
that knows, when it is made, that it has nothing to do), is left out, so a
Queue without middleware, or a worker with only the built-in logging, pays for
nothing it does not use. Whether a hook is ``async def`` is looked up here, once: a plain
hook is called, never wrapped in a coroutine.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Coroutine, Iterable
from typing import Any

import structlog

from aioqueue.errors import ConfigurationError
from aioqueue.middleware import Middleware, installed

__all__ = ["NO_HOOKS", "Hooks", "fire", "start", "with_installed"]

log = structlog.get_logger("aioqueue.middleware")

HOOK_NAMES = (
    "before_enqueue",
    "after_enqueue",
    "on_worker_start",
    "on_worker_stop",
    "before_attempt",
    "after_attempt",
    "on_settled",
)

Call = tuple[Any, bool, str]  # the bound hook, whether it is async, the middleware's name


def with_installed(given: Iterable[object]) -> list[object]:
    """``given``, then each middleware ``aioqueue.middleware.install`` added whose class
    is not among them: what a ``Queue`` or ``Worker`` made now runs."""
    chosen = list(given)
    kinds = {type(m) for m in chosen}
    chosen += [m for m in installed() if type(m) not in kinds]
    return chosen


class Hooks:
    """Per hook, the calls to make, in the order the middleware were given."""

    __slots__ = ("middleware", *HOOK_NAMES)

    before_enqueue: tuple[Call, ...]
    after_enqueue: tuple[Call, ...]
    on_worker_start: tuple[Call, ...]
    on_worker_stop: tuple[Call, ...]
    before_attempt: tuple[Call, ...]
    after_attempt: tuple[Call, ...]
    on_settled: tuple[Call, ...]

    def __init__(self, middleware: Iterable[object] = ()) -> None:
        self.middleware = tuple(middleware)
        for m in self.middleware:
            if isinstance(m, type):
                raise ConfigurationError(
                    f"middleware must be an instance, not the class {m.__qualname__}"
                )
            if not any(hasattr(m, name) for name in HOOK_NAMES):
                raise ConfigurationError(f"{m!r} has none of the middleware hooks {HOOK_NAMES}")
        for name in HOOK_NAMES:
            calls: list[Call] = []
            for m in self.middleware:
                hook = getattr(m, name, None)
                if not callable(hook) or getattr(type(m), name, None) is getattr(Middleware, name):
                    continue  # not there, or the base class's no-op
                calls.append((hook, inspect.iscoroutinefunction(hook), type(m).__qualname__))
            setattr(self, name, tuple(calls))

    @property
    def attempts(self) -> bool:
        """Any hook around attempts: the worker then builds an ``Attempt`` per delivery."""
        return bool(self.before_attempt or self.after_attempt or self.on_settled)

    @property
    def enqueues(self) -> bool:
        return bool(self.before_enqueue or self.after_enqueue)


async def fire(calls: tuple[Call, ...], *args: Any) -> None:
    """Calls each hook in turn; one that raises is logged and the rest still run."""
    for hook, is_async, name in calls:
        try:
            if is_async:
                await hook(*args)
            else:
                hook(*args)
        except Exception as exc:
            _failed(name, hook, exc)


def start(calls: tuple[Call, ...], *args: Any) -> Coroutine[Any, Any, None] | None:
    """Calls the plain hooks up to the first async one now; returns what is left to
    await (in order, as ``fire``), or None when every hook was plain: the common
    middleware, counters, tracers and the built-in log, cost no coroutine."""
    for i, (hook, is_async, name) in enumerate(calls):
        if is_async:
            return fire(calls[i:], *args)
        try:
            hook(*args)
        except Exception as exc:
            _failed(name, hook, exc)
    return None


def _failed(name: str, hook: Any, exc: Exception) -> None:
    # a message that cannot be rendered must not escape either
    with contextlib.suppress(Exception):
        log.error(
            "middleware.failed",
            middleware=name,
            hook=getattr(hook, "__name__", "?"),
            error=f"{type(exc).__name__}: {exc}"[:500],
        )


NO_HOOKS = Hooks()
