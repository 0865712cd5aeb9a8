"""The web dashboard (``pip install 'aioqueue[web]'``): a Starlette app that
mounts inside your ASGI app, or runs alone as ``aioqueue dashboard``.

    from aioqueue.web import create_app

    app.mount("/queues", create_app("redis://localhost", authorize=is_staff))

Pages: the overview (queues, depths, an hour of throughput and failures,
latency, workers), a queue's jobs by state (paged by cursor, searchable), a
job in full with its event timeline and buttons (retry, abort, delete), bulk
actions on the dead jobs, workers and cron schedules. Live over Server-Sent
Events from one reader per process; a JSON API under ``/api`` for all of it.
See docs/dashboard.md.
"""

from __future__ import annotations

from aioqueue.web._app import create_app

__all__ = ["create_app"]
