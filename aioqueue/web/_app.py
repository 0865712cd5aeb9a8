"""``create_app``: the dashboard as one Starlette app, to mount anywhere."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aioqueue._protocol.keys import check_queue_name
from aioqueue._redis.connect import default_url
from aioqueue.serializers import Serializer, get_serializer
from aioqueue.task import DEFAULT_RESULT_TTL
from aioqueue.web import _api as api
from aioqueue.web import _pages as pages
from aioqueue.web._dashboard import Dashboard
from aioqueue.web._guard import dashboard_of, guarded
from aioqueue.web._render import HERE
from aioqueue.web._security import Authorize, Security

__all__ = ["create_app"]

PING_SECONDS = 15  # a comment line on an idle stream: proxies keep it open


@guarded("read")
async def events(request: Request) -> Response:
    """Server-Sent Events: ``event`` (one per stream entry), ``stats`` (a queue's
    counters), ``gap`` (updates were dropped: reload), ``ready`` once subscribed."""
    queue = request.query_params.get("queue") or None
    if queue is not None:
        check_queue_name(queue)
    job = request.query_params.get("job") or None
    hub = dashboard_of(request).hub

    async def stream() -> AsyncIterator[dict[str, Any]]:
        async with hub.subscribe(queue, job) as subscriber:
            yield {"event": "ready", "data": "{}"}
            while True:
                message = await subscriber.get()
                yield {"event": message["type"], "data": msgspec.json.encode(message).decode()}

    return EventSourceResponse(stream(), ping=PING_SECONDS)


def create_app(
    redis_url: str | None = None,
    *,
    read_only: bool = False,
    authorize: Authorize | None = None,
    serializer: str | Serializer = "msgpack",
    queues: list[str] | None = None,
    result_ttl: float = DEFAULT_RESULT_TTL,
) -> Starlette:
    """The dashboard: mount it (``app.mount("/queues", create_app(url))``) or serve it
    (``aioqueue dashboard``).

    Args:
        redis_url: the Redis to show; None: ``AIOQUEUE_REDIS_URL``, else
            ``redis://localhost:6379/0``.
        read_only: no buttons; every write endpoint answers 405.
        authorize: ``authorize(request, action) -> bool`` (or an awaitable of one),
            asked before every endpoint with action ``read``, ``retry``, ``abort`` or
            ``delete``; anything but True answers 403.
        serializer: how the jobs' arguments and results are decoded to be shown (the
            producers' serializer).
        queues: the queues shown; None finds them (a bounded SCAN, see
            ``Admin.discover``).
        result_ttl: how long the record of a job aborted here is kept (seconds, as
            ``Queue(result_ttl=...)``).

    Returns:
        A Starlette app: pages at ``/``, the JSON API under ``/api``, the event
        stream at ``/events``, relative to wherever it is mounted.

    Raises:
        ConfigurationError: a queue name in ``queues`` is invalid, or the serializer
            is unknown.
    """
    dashboard = Dashboard(
        redis_url or default_url(),
        read_only=read_only,
        authorize=authorize,
        serializer=get_serializer(serializer),
        queues=[check_queue_name(q) for q in queues] if queues is not None else None,
        result_ttl=result_ttl,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # run when this app is served itself; mounted, the host app's lifespan runs
        # instead, and the connections close with the process
        yield
        await dashboard.aclose()

    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/queue", pages.queue_page, name="queue"),
        Route("/job", pages.job_page, name="job"),
        Route("/workers", pages.workers_page, name="workers"),
        Route("/cron", pages.cron_page, name="cron"),
        Route("/actions", pages.actions, methods=["POST"], name="actions"),
        Route("/events", events, name="events"),
        Route("/api/overview", api.overview),
        Route("/api/queue", api.queue),
        Route("/api/jobs", api.jobs),
        Route("/api/job", api.job),
        Route("/api/workers", api.workers_list),
        Route("/api/cron", api.cron),
        Route("/api/csrf", api.csrf),
        Route("/api/actions", api.actions, methods=["POST"]),
        Route("/api/events", events),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Security)], lifespan=lifespan)
    app.state.aioqueue_dashboard = dashboard
    return app
