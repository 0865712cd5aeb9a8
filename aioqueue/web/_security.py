"""What guards the dashboard: a nonce-based Content-Security-Policy on every
answer, a CSRF token on every POST, ``read_only`` and the host app's
``authorize(request, action)`` hook.

CSRF is the double-submit form: a random token in an HttpOnly, SameSite=Strict
cookie scoped to the dashboard's path, and the same token in each form (a
hidden field) or, for the JSON API, in the ``X-CSRF-Token`` header; a POST
whose two do not match is refused (403). A page on another site can make a
browser send the cookie (not with SameSite=Strict, but older browsers), never
read it to put it in the form.
"""

from __future__ import annotations

import hmac
import inspect
import re
import secrets
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Authorize", "Security", "csrf_ok", "nonce", "root_path"]

COOKIE = "aioqueue_csrf"
HEADER = "x-csrf-token"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
Authorize = Callable[[Request, str], bool | Awaitable[bool]]


def root_path(scope: Scope) -> str:
    """Where the dashboard is mounted ('' at the root): every link starts with it."""
    return str(scope.get("root_path") or "").rstrip("/")


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def nonce(request: Request) -> str:
    return str(_state(request.scope)["aioqueue_nonce"])


def csrf_token(request: Request) -> str:
    return str(_state(request.scope)["aioqueue_csrf"])


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether ``submitted`` is the token of the cookie this request carried."""
    sent = request.cookies.get(COOKIE)
    if not sent or not submitted or not _TOKEN.match(sent):
        return False
    return hmac.compare_digest(sent.encode(), submitted.encode())


class Security:
    """ASGI middleware: the CSP (with a fresh nonce per answer), a few headers that
    keep the pages out of frames and sniffing, and the CSRF cookie."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _state(scope)
        state["aioqueue_nonce"] = value = secrets.token_urlsafe(18)
        token = _cookie(scope)
        fresh = token is None
        state["aioqueue_csrf"] = token = token or secrets.token_urlsafe(32)
        path = root_path(scope) or "/"
        secure = "; Secure" if scope.get("scheme") == "https" else ""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = (
                    f"default-src 'none'; script-src 'nonce-{value}'; style-src 'nonce-{value}';"
                    " img-src 'self' data:; connect-src 'self'; form-action 'self';"
                    " frame-ancestors 'none'; base-uri 'none'"
                )
                headers["x-content-type-options"] = "nosniff"
                headers["x-frame-options"] = "DENY"
                headers["referrer-policy"] = "same-origin"
                if fresh:
                    headers.append(
                        "set-cookie",
                        f"{COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict{secure}",
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a cookie header we cannot read: a fresh token
                return None
            morsel = jar.get(COOKIE)
            if morsel is not None and _TOKEN.match(morsel.value):
                return morsel.value
    return None


async def allowed(authorize: Authorize | None, request: Request, action: str) -> bool:
    """The host app's word on ``action`` (read, retry, abort, delete); yes without a hook."""
    if authorize is None:
        return True
    answer = authorize(request, action)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer is True
