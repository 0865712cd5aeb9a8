"""The JSON API: everything the pages show, from the same reads, and the same
actions. Writes take a JSON body and the CSRF token in ``X-CSRF-Token`` (the
cookie's value; a GET of any page or of ``/api/csrf`` sets it)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from aioqueue._admin.detail import job_detail
from aioqueue._admin.pages import STATES, page, search
from aioqueue._protocol.keys import check_job_id, check_queue_name
from aioqueue.web import _views as views
from aioqueue.web._guard import Refused, any_of, as_int, check_write, dashboard_of, guarded, param
from aioqueue.web._security import HEADER, csrf_ok, csrf_token

__all__ = ["actions", "cron", "csrf", "job", "jobs", "overview", "queue", "workers_list"]


def _json(value: Any, status: int = 200) -> Response:
    return Response(views.encode(value), status, media_type="application/json")


@guarded("read", json=True)
async def overview(request: Request) -> Response:
    data = await dashboard_of(request).overview()
    return _json(
        {
            "now_ms": data["now_ms"],
            "truncated": data["truncated"],
            "queues": [views.queue_json(v) for v in data["queues"]],
        }
    )


@guarded("read", json=True)
async def queue(request: Request) -> Response:
    dashboard = dashboard_of(request)
    name = check_queue_name(param(request, "name"))
    now = await dashboard.admin.now_ms()
    return _json(views.queue_json(await dashboard.queue_view(name, now)))


@guarded("read", json=True)
async def jobs(request: Request) -> Response:
    dashboard = dashboard_of(request)
    name = check_queue_name(param(request, "queue"))
    state = any_of(request.query_params.get("state", "ready"), STATES, "state")
    cursor = request.query_params.get("cursor") or None
    query = request.query_params.get("q", "").strip()
    if query:
        text = request.query_params.get("text") == "1"
        found = await search(
            dashboard.admin, name, state, query, dashboard.serializer, cursor, text=text
        )
    else:
        limit = as_int(request.query_params.get("limit"), 50)
        found = await page(dashboard.admin, name, state, dashboard.serializer, cursor, limit)
    return _json(asdict(found))


@guarded("read", json=True)
async def job(request: Request) -> Response:
    dashboard = dashboard_of(request)
    name = check_queue_name(param(request, "queue"))
    found = await job_detail(dashboard.admin, name, param(request, "id"), dashboard.serializer)
    return _json(views.detail_json(found))


@guarded("read", json=True)
async def workers_list(request: Request) -> Response:
    rows, now, truncated = await dashboard_of(request).workers()
    return _json({"now_ms": now, "truncated": truncated, "workers": [asdict(w) for w in rows]})


@guarded("read", json=True)
async def cron(request: Request) -> Response:
    rows, now, truncated = await dashboard_of(request).crons()
    return _json({"now_ms": now, "truncated": truncated, "cron": [asdict(c) for c in rows]})


@guarded("read", json=True)
async def csrf(request: Request) -> Response:
    """The CSRF token for this browser (also set as its cookie)."""
    return _json({"csrf": csrf_token(request), "header": HEADER})


class ActionBody(msgspec.Struct, forbid_unknown_fields=True):
    queue: str
    action: str
    jobs: list[str] | None = None
    all: bool = False


@guarded(None, write=True, json=True)
async def actions(request: Request) -> Response:
    """``{"queue": Q, "action": "retry" | "abort" | "delete", "jobs": [ids]}``, or
    ``"all": true`` instead of ``jobs`` for every dead job (retry, delete)."""
    if not csrf_ok(request, request.headers.get(HEADER)):
        raise Refused(403, f"missing or wrong CSRF token (the {HEADER} header)")
    try:
        body = msgspec.json.decode(await request.body(), type=ActionBody)
    except msgspec.DecodeError as exc:
        raise Refused(400, f"bad request body: {exc}") from None
    await check_write(request, body.action)
    name = check_queue_name(body.queue)
    if body.all == (body.jobs is not None):
        raise Refused(400, 'give either "jobs" or "all": true')
    if body.all and body.action == "abort":
        raise Refused(400, "abort needs the jobs to abort")
    ids = None if body.all else [check_job_id(i) for i in body.jobs or []]
    return _json(await dashboard_of(request).perform(name, body.action, ids))
