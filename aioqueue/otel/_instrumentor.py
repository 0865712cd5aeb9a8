"""``AioqueueInstrumentor``: OpenTelemetry for every Queue and Worker made after
``instrument()``, without passing the middleware to each.

It wraps the constructors of ``Queue`` and ``Worker`` so that each gets one
``OpenTelemetryMiddleware`` appended to the ``middleware`` it was given (unless one is
there already); ``uninstrument()`` puts them back. The classes are aioqueue's own, so
this stays inside aioqueue and touches no other library."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from aioqueue._client.queue import Queue
from aioqueue._worker.worker import Worker
from aioqueue.otel._middleware import OpenTelemetryMiddleware

__all__ = ["AioqueueInstrumentor"]

_Init = Callable[..., None]


class AioqueueInstrumentor:
    """Adds ``OpenTelemetryMiddleware`` to every ``Queue`` and ``Worker`` made afterwards.

        from aioqueue.otel import AioqueueInstrumentor

        AioqueueInstrumentor().instrument()   # before the app makes its Queue / Worker

    Call it where the process starts (the module ``aioqueue run`` imports, the web
    app's start-up): a Queue or Worker made before it is not traced. Every instance
    shares one state: instrumenting twice changes nothing.
    """

    _originals: ClassVar[dict[type, _Init]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def is_instrumented(self) -> bool:
        """Whether Queue and Worker get the middleware now."""
        return bool(self._originals)

    def instrument(self, **options: Any) -> None:
        """Start tracing every Queue and Worker made from now on.

        Args:
            **options: passed to the ``OpenTelemetryMiddleware`` made (``tracer_provider``,
                ``meter_provider``, ``parent``, ``create_spans``). One middleware serves
                every Queue and Worker.
        """
        middleware = OpenTelemetryMiddleware(**options)
        with self._lock:
            if self._originals:
                return
            for cls in (Queue, Worker):
                original: _Init = cls.__init__
                self._originals[cls] = original
                cls.__init__ = _with_middleware(original, middleware)  # type: ignore[method-assign]

    def uninstrument(self) -> None:
        """Stop adding the middleware (Queues and Workers made already keep theirs)."""
        with self._lock:
            for cls, original in self._originals.items():
                cls.__init__ = original  # type: ignore[misc]
            self._originals.clear()


def _with_middleware(original: _Init, middleware: OpenTelemetryMiddleware) -> _Init:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        given = list(kwargs.get("middleware") or ())
        if not any(isinstance(m, OpenTelemetryMiddleware) for m in given):
            kwargs["middleware"] = [*given, middleware]
        original(self, *args, **kwargs)

    return __init__
