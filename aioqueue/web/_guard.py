"""Every endpoint's way in: the host app's ``authorize`` hook, ``read_only`` and
CSRF for writes, and our errors as HTTP answers (HTML for pages, JSON for the API)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from aioqueue.errors import (
    AioqueueError,
    ConfigurationError,
    JobNotFound,
    RedisRefused,
    RedisUnavailable,
)
from aioqueue.web._dashboard import Dashboard
from aioqueue.web._render import error_page
from aioqueue.web._security import allowed

__all__ = ["WRITE_ACTIONS", "Endpoint", "dashboard_of", "guarded"]

Endpoint = Callable[[Request], Awaitable[Response]]
WRITE_ACTIONS = frozenset({"retry", "abort", "delete"})


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.aioqueue_dashboard
    return dashboard


class Refused(Exception):
    """An answer other than the page: status and message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _status(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, Refused):
        return exc.status, exc.message
    if isinstance(exc, JobNotFound):
        return 404, str(exc)
    if isinstance(exc, ConfigurationError):
        return 400, str(exc)
    if isinstance(exc, RedisUnavailable):
        return 503, str(exc)
    if isinstance(exc, RedisRefused):
        return 502, str(exc)
    return 500, str(exc)


def guarded(
    action: str | None, *, write: bool = False, json: bool = False
) -> Callable[[Endpoint], Endpoint]:
    """The endpoint runs only when allowed. ``action`` None: the write endpoint
    names its action itself (``check_write``). Write endpoints answer 405 on a
    read-only dashboard and need the CSRF token."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded_endpoint(request: Request) -> Response:
            dashboard = dashboard_of(request)
            try:
                if write and dashboard.read_only:
                    raise Refused(405, "this dashboard is read-only", {"allow": "GET"})
                if action is not None and not await allowed(dashboard.authorize, request, action):
                    raise Refused(403, f"not allowed: {action}")
                return await endpoint(request)
            except (Refused, AioqueueError) as exc:
                status, message = _status(exc)
                headers = exc.headers if isinstance(exc, Refused) else {}
                if json:
                    return Response(
                        msgspec.json.encode({"error": message, "status": status}),
                        status,
                        headers,
                        media_type="application/json",
                    )
                return error_page(request, status, message, headers)

        return guarded_endpoint

    return wrap


async def check_write(request: Request, action: str) -> None:
    """For a write endpoint that learns its action from the request."""
    if action not in WRITE_ACTIONS:
        raise Refused(400, f"unknown action {action!r}")
    if not await allowed(dashboard_of(request).authorize, request, action):
        raise Refused(403, f"not allowed: {action}")


def param(request: Request, name: str, default: str | None = None) -> str:
    value = request.query_params.get(name, default)
    if value is None:
        raise Refused(400, f"missing parameter {name!r}")
    return value


def as_int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        raise Refused(400, f"not a number: {text!r}") from None


def any_of(value: Any, choices: tuple[str, ...], what: str) -> Any:
    if value not in choices:
        raise Refused(400, f"unknown {what} {value!r}: one of {', '.join(choices)}")
    return value
