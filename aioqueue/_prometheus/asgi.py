"""The ASGI app of ``aioqueue.prometheus.metrics_app``: a registry on a web app's own path."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["default_registry", "metrics_app"]

_ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def default_registry() -> CollectorRegistry:
    """prometheus_client's default registry; in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
    set, e.g. several web server processes) a registry of every process's files."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def metrics_app(registry: CollectorRegistry | None = None) -> _ASGIApp:
    """An ASGI app that serves ``registry`` (``default_registry()`` when None) in the
    Prometheus text format (OpenMetrics when the scraper asks for it), to mount on a
    web app's own path: ``app.mount("/metrics", metrics_app())``. The registry is read
    in a worker thread, so a collector that waits on Redis never blocks the app."""
    served = default_registry() if registry is None else registry

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":  # served alone (uvicorn): nothing to start or stop
            while True:
                kind = (await receive())["type"]
                if kind == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif kind == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        accept = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"accept")
        encoder, content_type = choose_encoder(accept)
        body = await anyio.to_thread.run_sync(encoder, served)
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
