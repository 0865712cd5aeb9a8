"""``aioqueue cron TARGET``: the recurring jobs of a worker, their next and last ticks.

The schedule comes from the worker's own declarations; Redis only adds the
last tick fired and its clock. So the table is shown without Redis too, with a
note on stderr saying why the last ticks are unknown.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import click

from aioqueue._cli.options import json_option
from aioqueue._cli.output import echo, emit_json, table
from aioqueue._cli.target import load_worker
from aioqueue._redis.connect import connect_any
from aioqueue._redis.errors import mapped_errors, redact, where
from aioqueue._redis.retry import deadline
from aioqueue._text import printable
from aioqueue.cron import CronInfo, schedule_status, schedule_table
from aioqueue.errors import AioqueueError, RedisUnavailable

if TYPE_CHECKING:
    from aioqueue._worker.worker import Worker

__all__ = ["cron_schedule"]

CRON_TIMEOUT = 3.0  # Redis only adds the last ticks: a schedule is worth showing without it


@click.command(name="cron")
@click.argument("target")
@click.option(
    "--redis-url",
    envvar="AIOQUEUE_REDIS_URL",
    show_envvar=True,
    help="Redis to read the last ticks from.  [default: the worker's]",
)
@json_option
def cron_schedule(target: str, redis_url: str | None, as_json: bool) -> None:
    """The recurring jobs of the worker TARGET: schedule, next fire time, last tick fired.

    TARGET is what `aioqueue run` takes. When Redis answers, next fire times are
    on its clock (the one ticks fire by) and the last tick fired is read from
    it; otherwise next fire times come from this host's clock, the last tick is
    unknown and a note says why (exit 0 either way).
    """

    worker = load_worker(target)
    url = redis_url or worker.redis_url
    rows, error = _cron_table(worker, url) if worker.cron else ([], None)
    if as_json:
        emit_json(
            {
                "target": target,
                "redis": redact(url),
                "redis_reachable": error is None,
                "error": error,
                "jobs": [_cron_json(c) for c in rows],
            }
        )
        return
    if not worker.cron:
        echo(f"no recurring jobs in {target}")
        return
    unknown = "?" if error is not None else "never"
    table(
        ["NAME", "TASK", "SCHEDULE", "TIMEZONE", "QUEUE", "NEXT FIRE", "LAST FIRED", "OPTIONS"],
        [
            [
                c.name,
                c.task,
                c.schedule,
                c.timezone,
                c.queue,
                _local(c.next_fire),
                _local(c.last_fired) if c.last_fired is not None else unknown,
                _cron_options(c) or "-",
            ]
            for c in rows
        ],
    )
    if error is not None:
        # stderr: the table on stdout stays the same shape for anyone piping it
        click.echo(
            "aioqueue: last ticks unknown, next fire times from this host's clock: "
            + printable(error),
            err=True,
        )


def _cron_table(worker: Worker, url: str) -> tuple[list[CronInfo], str | None]:
    """The schedule with the last ticks from Redis, or without them and why not."""

    async def main() -> list[CronInfo]:
        with mapped_errors(url), deadline(CRON_TIMEOUT, where(url)):
            redis = connect_any(url, connect_timeout=CRON_TIMEOUT)
            try:
                return await schedule_status(worker, redis)
            finally:
                await redis.aclose()

    try:
        return anyio.run(main), None
    except RedisUnavailable as exc:
        error = str(exc)
    except AioqueueError as exc:  # an ACL refusing TIME or HGET, a garbage key
        error = f"Redis at {redact(url)}: {exc}"
    return schedule_table(worker), error


def _cron_options(c: CronInfo) -> str:
    return ",".join(o for o, on in (("catch_up", c.catch_up), ("no_overlap", c.no_overlap)) if on)


def _local(dt: datetime) -> str:
    """The time in the job's own time zone, as its schedule is written."""
    return dt.strftime("%Y-%m-%d %H:%M:%S %Z")


def _cron_json(c: CronInfo) -> dict[str, Any]:
    out = asdict(c)
    for name in ("next_fire", "last_fired"):
        dt = out[name]
        out[name] = dt.isoformat() if dt is not None else None
        out[f"{name}_ms"] = round(dt.timestamp() * 1000) if dt is not None else None
    return out
