"""The pages' templates (Jinja2, every value escaped) and what each page gets:
the dashboard's path, the CSP nonce, the CSRF token and read-only mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from aioqueue.web import _views as views
from aioqueue.web._security import csrf_token, nonce, root_path

__all__ = ["error_page", "page", "url"]

HERE = Path(__file__).parent
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value: job ids and errors may hold markup
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(ts=views.ts, duration=views.duration, q=lambda v: quote(str(v), safe=""))


def url(base: str, path: str, **params: Any) -> str:
    """``base`` + ``path`` with the non-empty ``params`` as its query."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")}, doseq=True)
    return f"{base}{path}" + (f"?{query}" if query else "")


ENV.globals["url"] = url


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    dashboard = request.app.state.aioqueue_dashboard
    values = {
        "base": root_path(request.scope),
        "nonce": nonce(request),
        "csrf": csrf_token(request),
        "read_only": dashboard.read_only,
        "live": None,
        "message": request.query_params.get("done", ""),
        **context,
    }
    html = ENV.get_template(template).render(values)
    return HTMLResponse(html, status)


def error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    response = page(request, "error.html", status, code=status, error=message)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
