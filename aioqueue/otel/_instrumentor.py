"""``AioqueueInstrumentor``: OpenTelemetry for every Queue and Worker made after
``instrument()``, without passing the middleware to each.

It installs one ``OpenTelemetryMiddleware`` process-wide (``aioqueue.middleware.install``):
every Queue and Worker made afterwards runs it after the middleware it was given,
unless it was given one already; ``uninstrument()`` takes it out again."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from aioqueue.middleware import install, uninstall
from aioqueue.otel._middleware import OpenTelemetryMiddleware

__all__ = ["AioqueueInstrumentor"]


class AioqueueInstrumentor:
    """Adds ``OpenTelemetryMiddleware`` to every ``Queue`` and ``Worker`` made afterwards.

        from aioqueue.otel import AioqueueInstrumentor

        AioqueueInstrumentor().instrument()   # before the app makes its Queue / Worker

    Call it where the process starts (the module ``aioqueue run`` imports, the web
    app's start-up): a Queue or Worker made before it is not traced. Every instance
    shares one state: instrumenting twice changes nothing.
    """

    _installed: ClassVar[OpenTelemetryMiddleware | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def is_instrumented(self) -> bool:
        """Whether Queue and Worker get the middleware now."""
        return AioqueueInstrumentor._installed is not None

    def instrument(self, **options: Any) -> None:
        """Start tracing every Queue and Worker made from now on.

        Args:
            **options: passed to the ``OpenTelemetryMiddleware`` made (``tracer_provider``,
                ``meter_provider``, ``parent``, ``create_spans``). One middleware serves
                every Queue and Worker.
        """
        with self._lock:
            if AioqueueInstrumentor._installed is not None:
                return
            middleware = OpenTelemetryMiddleware(**options)
            install(middleware)
            AioqueueInstrumentor._installed = middleware

    def uninstrument(self) -> None:
        """Stop adding the middleware (Queues and Workers made already keep theirs)."""
        with self._lock:
            if AioqueueInstrumentor._installed is not None:
                uninstall(AioqueueInstrumentor._installed)
                AioqueueInstrumentor._installed = None
