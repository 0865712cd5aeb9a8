"""The on-call commands: ``enqueue``, ``info``, ``jobs failed|retry|purge``, ``check``, ``cron``.

Human tables by default, ``--json`` for scripts. Exit codes: 0 done, 1 the
answer is "no" (a job failed, no live worker, an id not found), 2 an error
(bad import path, Redis unreachable, bad usage).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click
from redis.exceptions import RedisError

from aioqueue.admin import Admin, QueueInfo, WorkerInfo
from aioqueue.client import Queue
from aioqueue.connection import DEFAULT_URL, connect_any, mapped_errors, redact
from aioqueue.cron import CronInfo, schedule_status, schedule_table
from aioqueue.errors import (
    ConfigurationError,
    JobFailed,
    JobNotFound,
    RedisUnavailable,
    ResultTimeout,
)
from aioqueue.task import DEFAULT_QUEUE, Task

if TYPE_CHECKING:
    from aioqueue.worker import Worker

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


class No(click.ClickException):
    """The answer is no (exit 1): printed as one line."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"aioqueue: {self.format_message()}", err=True)


def _with_admin(url: str, fn: Callable[[Admin], Awaitable[T]], timeout: float = 10.0) -> T:
    async def main() -> T:
        with mapped_errors(url), anyio.fail_after(timeout):
            async with Admin(url, timeout=timeout) as admin:
                return await fn(admin)

    return anyio.run(main)


async def _queues(admin: Admin, given: Sequence[str]) -> tuple[list[str], bool]:
    if given:
        return list(given), False
    return await admin.discover()


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return repr(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _parse_value(text: str) -> Any:
    """A JSON value where the text is one (1, 2.5, true, null, [..], {..}, "s"), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- enqueue ---------------------------------------------------------------------------


@click.command()
@click.argument("task_spec", metavar="MODULE:TASK")
@click.argument("args", nargs=-1)
@click.option("-k", "--kwarg", "kwargs", multiple=True, help="NAME=VALUE, parsed like ARGS.")
@click.option("--queue", help="Overrides the task's queue.  [default: the task's, or default]")
@click.option("--delay", type=click.FloatRange(min=0), help="Seconds before the job may run.")
@click.option("--wait", is_flag=True, help="Wait for the job and print its result.")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True)
@json_option
@redis_option
def enqueue(
    task_spec: str,
    args: tuple[str, ...],
    kwargs: tuple[str, ...],
    queue: str | None,
    delay: float | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    redis_url: str,
) -> None:
    """Enqueue a job of MODULE:TASK with ARGS (JSON values where they parse, else strings).

    Prints the job id, or with --wait the result (exit 1 if the job failed).
    """
    from aioqueue.cli import load_target

    task = load_target(task_spec)
    if not isinstance(task, Task):
        raise ConfigurationError(f"{task_spec!r} is not a task (got {type(task).__name__})")
    named: dict[str, Any] = {}
    for item in kwargs:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--kwarg")
        named[name] = _parse_value(value)
    if queue is not None or delay is not None:
        task = task.options(queue=queue, delay=delay)
    values = [_parse_value(a) for a in args]

    async def main() -> dict[str, Any]:
        with mapped_errors(redis_url):
            async with Queue(redis_url, timeout=min(timeout or 5.0, 10.0)) as q:
                job = await q.enqueue(task, *values, **named)
                out: dict[str, Any] = {"id": job.id, "queue": job.queue}
                if not wait:
                    return out
                try:
                    out["result"] = await job.result(timeout=timeout)
                    out["status"] = "complete"
                except JobFailed as exc:
                    out["status"] = "failed"
                    out["error"] = {"type": exc.exc_type, "message": exc.exc_message}
                except ResultTimeout:
                    out["status"] = str(await job.status())
                except JobNotFound:
                    out["status"] = "missing"
                return out

    out = anyio.run(main)
    if as_json:
        _emit_json(out)
    elif not wait:
        click.echo(out["id"])
    elif out["status"] == "complete":
        result = out["result"]
        click.echo(result if isinstance(result, str) else json.dumps(result, default=_jsonable))
    if wait and out["status"] != "complete":
        if out["status"] == "failed":
            err = out["error"]
            raise No(f"job {out['id']} failed: {err['type']}: {err['message']}")
        raise No(f"job {out['id']} did not finish within {timeout}s (status: {out['status']})")


# -- info --------------------------------------------------------------------------------


@click.command()
@click.option(
    "--queue", "queues", multiple=True, help="Queue to show (repeatable).  [default: all]"
)
@json_option
@redis_option
def info(queues: tuple[str, ...], as_json: bool, redis_url: str) -> None:
    """Queues with their depths and throughput, and the workers alive."""

    async def main(admin: Admin) -> tuple[list[QueueInfo], bool]:
        names, truncated = await _queues(admin, queues)
        now = await admin.now_ms()
        return [await admin.queue(name, now) for name in names], truncated

    found, truncated = _with_admin(redis_url, main)
    if as_json:
        _emit_json(
            {
                "redis": redact(redis_url),
                "queues": [asdict(q) for q in found],
                "discovery_truncated": truncated,
            }
        )
        return
    if not found:
        click.echo(f"no queues found in {redact(redis_url)}")
        return
    _table(
        ["QUEUE", "QUEUED", "SCHEDULED", "ACTIVE", "FAILED", "WORKERS", "DONE/MIN", "JOBS/S"],
        [
            [
                q.name,
                q.queued,
                q.scheduled,
                q.active,
                q.failed,
                q.workers_alive,
                q.finished_last_minute,
                q.per_second,
            ]
            for q in found
        ],
    )
    workers = _alive_by_id(found)
    click.echo("")
    if not workers:
        click.echo("no workers alive")
    else:
        _table(
            ["WORKER", "QUEUES", "HOST", "PID", "RUNNING", "DONE", "HEARTBEAT"],
            [
                [
                    w.id,
                    ",".join(qs),
                    w.host,
                    w.pid or "?",
                    f"{w.running}/{w.concurrency}",
                    w.done,
                    f"{w.seconds_since_heartbeat:.1f}s ago",
                ]
                for w, qs in workers
            ],
        )
    if truncated:
        click.echo("\n(queue discovery stopped early: name queues with --queue)")


def _alive_by_id(found: list[QueueInfo]) -> list[tuple[WorkerInfo, list[str]]]:
    by_id: dict[str, tuple[WorkerInfo, list[str]]] = {}
    for q in found:
        for w in q.workers:
            if w.alive:
                by_id.setdefault(w.id, (w, []))[1].append(q.name)
    return sorted(by_id.values(), key=lambda item: item[0].id)


# -- jobs ------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Dead-lettered jobs: list, retry, purge."""


@jobs.command()
@click.option("--queue", "queues", multiple=True, help="Queue (repeatable).  [default: all]")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@redis_option
def failed(queues: tuple[str, ...], limit: int, as_json: bool, redis_url: str) -> None:
    """The newest failed (dead-lettered) jobs per queue."""

    async def main(admin: Admin) -> list[Any]:
        names, _ = await _queues(admin, queues)
        out = []
        for name in names:
            out += await admin.dead_jobs(name, limit)
        return out

    dead = _with_admin(redis_url, main)
    if as_json:
        _emit_json([asdict(d) for d in dead])
        return
    if not dead:
        click.echo("no failed jobs")
        return
    _table(
        ["ID", "QUEUE", "TASK", "ATTEMPTS", "FAILED AT (UTC)", "ERROR"],
        [
            [
                d.id,
                d.queue,
                d.task or "?",
                d.attempts,
                _when(d.failed_at_ms),
                f"{d.error_type}: {d.error_message}"[:80],
            ]
            for d in dead
        ],
    )


def _dead_action(verb: str, past: str, action: str) -> click.Command:
    @click.command(name=verb)
    @click.argument("ids", nargs=-1)
    @click.option("--all", "every", is_flag=True, help="Every failed job of the queue.")
    @click.option("--queue", default=DEFAULT_QUEUE, show_default=True)
    @json_option
    @redis_option
    def command(
        ids: tuple[str, ...], every: bool, queue: str, as_json: bool, redis_url: str
    ) -> None:
        if bool(ids) == every:
            raise click.UsageError("give job IDs or --all (not both)")

        async def main(admin: Admin) -> int:
            fn = admin.requeue if action == "requeue" else admin.purge
            return await fn(queue, None if every else list(ids))

        count = _with_admin(redis_url, main)
        if as_json:
            _emit_json({"queue": queue, past: count})
        else:
            click.echo(f"{past} {count} job(s) of queue {queue}")
        if ids and count < len(ids):
            raise No(f"{len(ids) - count} of {len(ids)} id(s) are not failed jobs of {queue}")

    command.help = f"{verb.capitalize()} failed jobs: IDs, or --all."
    return command


jobs.add_command(_dead_action("retry", "requeued", "requeue"))
jobs.add_command(_dead_action("purge", "purged", "purge"))


# -- check -------------------------------------------------------------------------------


@click.command()
@click.option("--queue", "queues", multiple=True, help="Queue (repeatable).  [default: all]")
@click.option("--this-host", is_flag=True, help="Only workers on this host (a container probe).")
@json_option
@redis_option
def check(queues: tuple[str, ...], this_host: bool, as_json: bool, redis_url: str) -> None:
    """Exit 0 when a worker's heartbeat is fresh, else 1: for liveness probes."""

    async def main(admin: Admin) -> list[QueueInfo]:
        names, _ = await _queues(admin, queues)
        now = await admin.now_ms()
        return [await admin.queue(name, now) for name in names]

    found = _with_admin(redis_url, main)
    host = socket.gethostname()
    alive = [w for w, _ in _alive_by_id(found) if not this_host or w.host == host]
    if as_json:
        _emit_json({"ok": bool(alive), "alive": [asdict(w) for w in alive]})
    elif alive:
        click.echo(f"ok: {len(alive)} worker(s) alive")
    if not alive:
        where = f" on {host}" if this_host else ""
        raise No(f"no worker with a fresh heartbeat{where}")


# -- cron --------------------------------------------------------------------------------

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
    from aioqueue.cli import load_worker

    worker = load_worker(target)
    url = redis_url or worker.redis_url
    table, error = _cron_table(worker, url) if worker.cron else ([], None)
    if as_json:
        _emit_json(
            {
                "target": target,
                "redis": redact(url),
                "redis_reachable": error is None,
                "error": error,
                "jobs": [_cron_json(c) for c in table],
            }
        )
        return
    if not worker.cron:
        click.echo(f"no recurring jobs in {target}")
        return
    unknown = "?" if error is not None else "never"
    _table(
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
            for c in table
        ],
    )
    if error is not None:
        # stderr: the table on stdout stays the same shape for anyone piping it
        click.echo(
            f"aioqueue: last ticks unknown, next fire times from this host's clock: {error}",
            err=True,
        )


def _cron_table(worker: Worker, url: str) -> tuple[list[CronInfo], str | None]:
    """The schedule with the last ticks from Redis, or without them and why not."""

    async def main() -> list[CronInfo]:
        # the deadline outside the mapping: its TimeoutError says more than "unavailable"
        with anyio.fail_after(CRON_TIMEOUT), mapped_errors(url):
            redis = connect_any(url, connect_timeout=CRON_TIMEOUT)
            try:
                return await schedule_status(worker, redis)
            finally:
                await redis.aclose()

    try:
        return anyio.run(main), None
    except TimeoutError:
        error = f"Redis at {redact(url)} did not answer within {CRON_TIMEOUT:g}s"
    except RedisUnavailable as exc:
        error = str(exc)
    except RedisError as exc:  # an ACL refusing TIME or HGET
        error = f"Redis at {redact(url)} refused: {exc}"
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
