"""Options and the Admin runner shared by the commands that read or change a queue."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import click

from aioqueue._protocol.keys import EVENTS_MAXLEN
from aioqueue._redis.connect import DEFAULT_URL
from aioqueue._redis.errors import mapped_errors, where
from aioqueue._redis.retry import deadline
from aioqueue._worker.settings import env_var
from aioqueue.admin import Admin

__all__ = ["discover", "json_option", "redis_option", "timeout_option", "with_admin"]

T = TypeVar("T")


def redis_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--redis-url",
        envvar="AIOQUEUE_REDIS_URL",
        default=DEFAULT_URL,
        show_envvar=True,
        show_default=True,
        help="Redis to use.",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def timeout_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--redis-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=10.0,
        envvar="AIOQUEUE_REDIS_TIMEOUT",
        show_envvar=True,
        show_default=True,
        help="Seconds Redis may take to answer (each call, for a bulk action).",
    )(fn)


def with_admin(
    url: str, fn: Callable[[Admin], Awaitable[T]], timeout: float = 10.0, *, bounded: bool = True
) -> T:
    """Runs ``fn`` with an Admin, within ``timeout`` seconds in all (``bounded``),
    or each of its calls within ``timeout`` (a bulk action of any size)."""

    cap = os.environ.get(env_var("events_maxlen"), "")
    if cap and not cap.isdigit():
        raise click.BadParameter(f"{env_var('events_maxlen')}={cap!r} is not a count")
    events_maxlen = int(cap) if cap else EVENTS_MAXLEN  # the cap of jobs retry's entries

    async def main() -> T:
        redis = where(url)
        with mapped_errors(url, timeout):
            with deadline(timeout, redis) if bounded else contextlib.nullcontext():
                with deadline(timeout, redis):
                    admin = Admin(url, timeout=timeout, events_maxlen=events_maxlen)
                    await admin.__aenter__()
                try:
                    return await fn(admin)
                finally:
                    with anyio.CancelScope(shield=True):
                        await admin.__aexit__(None, None, None)

    return anyio.run(main)


async def discover(admin: Admin, given: Sequence[str]) -> tuple[list[str], bool]:
    if given:
        return list(given), False
    return await admin.discover()
