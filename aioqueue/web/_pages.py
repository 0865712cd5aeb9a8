"""The dashboard's HTML pages, rendered on the server from the same reads as the
JSON API (``aioqueue.web._api``); the browser's script only adds live updates."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aioqueue._admin.detail import job_detail
from aioqueue._admin.pages import STATES, page, search
from aioqueue._protocol.keys import check_job_id, check_queue_name
from aioqueue.web import _views as views
from aioqueue.web._guard import Refused, any_of, as_int, check_write, dashboard_of, guarded, param
from aioqueue.web._render import page as render
from aioqueue.web._render import url
from aioqueue.web._security import csrf_ok, root_path

__all__ = ["actions", "cron_page", "job_page", "overview", "queue_page", "workers_page"]

PAGE_SIZE = 50
FORM = "application/x-www-form-urlencoded"
FORM_MAX = 1 << 20


def live(request: Request, **params: Any) -> str:
    return url(root_path(request.scope), "/events", **params)


@guarded("read")
async def overview(request: Request) -> Response:
    data = await dashboard_of(request).overview()
    charts = {view.info.name: views.chart(view.minutes) for view in data["queues"]}
    return render(request, "overview.html", **data, charts=charts, live=live(request))


@guarded("read")
async def queue_page(request: Request) -> Response:
    dashboard = dashboard_of(request)
    name = check_queue_name(param(request, "name"))
    state = any_of(request.query_params.get("state", "ready"), STATES, "state")
    cursor = request.query_params.get("cursor") or None
    query = request.query_params.get("q", "").strip()
    text = request.query_params.get("text") == "1"
    limit = as_int(request.query_params.get("limit"), PAGE_SIZE)
    if query:
        found = await search(
            dashboard.admin, name, state, query, dashboard.serializer, cursor, text=text
        )
    else:
        found = await page(dashboard.admin, name, state, dashboard.serializer, cursor, limit)
    now = await dashboard.admin.now_ms()
    view = await dashboard.queue_view(name, now, minutes=0)
    return render(
        request,
        "queue.html",
        queue=name,
        state=state,
        states=STATES,
        found=found,
        view=view,
        now_ms=now,
        query=query,
        cursor=cursor or "",
        text_search=text,
        live=live(request, queue=name),
    )


@guarded("read")
async def job_page(request: Request) -> Response:
    dashboard = dashboard_of(request)
    name = check_queue_name(param(request, "queue"))
    job_id = param(request, "id")
    job = await job_detail(dashboard.admin, name, job_id, dashboard.serializer)
    now = await dashboard.admin.now_ms()
    return render(
        request,
        "job.html",
        queue=name,
        job=job,
        now_ms=now,
        live=live(request, queue=name, job=job_id),
    )


@guarded("read")
async def workers_page(request: Request) -> Response:
    rows, now, truncated = await dashboard_of(request).workers()
    return render(request, "workers.html", workers=rows, now_ms=now, truncated=truncated)


@guarded("read")
async def cron_page(request: Request) -> Response:
    rows, now, truncated = await dashboard_of(request).crons()
    return render(request, "cron.html", crons=rows, now_ms=now, truncated=truncated)


class _Form:
    """A urlencoded form (the dashboard posts no files: no multipart parser needed)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


async def _form(request: Request) -> _Form:
    if not request.headers.get("content-type", "").startswith(FORM):
        raise Refused(415, f"a form post ({FORM}) was expected")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX:
            raise Refused(413, "form too large")
    return _Form(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))


def _back(request: Request, given: str | None, fallback: str) -> str:
    """Where to go after an action: a page of this dashboard only."""
    base = root_path(request.scope)
    if given and given.startswith(base + "/") and not given.startswith("//"):
        return given
    return fallback


@guarded(None, write=True)
async def actions(request: Request) -> Response:
    """Retry, abort or delete jobs (a form post); bulk actions and deletes are
    confirmed on a page of their own first."""
    form = await _form(request)
    if not csrf_ok(request, form.get("csrf", "")):
        raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
    action = form.get("action", "")
    await check_write(request, action)
    name = check_queue_name(form.get("queue", ""))
    everything = form.get("scope") == "all"
    ids = [check_job_id(i) for i in form.all("job")]
    if not everything and not ids:
        raise Refused(400, "no job selected")
    if everything and action == "abort":
        raise Refused(400, "abort needs the jobs to abort")
    base = root_path(request.scope)
    back = _back(request, form.get("back", ""), url(base, "/queue", name=name))
    if (everything or action == "delete" or len(ids) > 1) and form.get("confirmed") != "1":
        dead = (await dashboard_of(request).admin.queue(name)).failed
        return render(
            request, "confirm.html", queue=name, action=action, ids=ids, everything=everything,
            dead=dead, back=back,
        )  # fmt: skip
    done = await dashboard_of(request).perform(name, action, None if everything else ids)
    message = f"{action}: {done['done']} job{'s' if done['done'] != 1 else ''}"
    joiner = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{joiner}{url('', '', done=message)[1:]}", 303)
