"""The on-call commands: ``enqueue``, ``info``, ``check`` (``jobs``: jobs.py, ``cron``: cron.py).

Human tables by default, ``--json`` for scripts. Exit codes: 0 done, 1 the
answer is "no" (a job failed, no live worker, an id not found), 2 an error
(bad import path, Redis unreachable, bad usage, garbage met while reading:
what could be read is shown, the unreadable parts as '?').
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import click

from aioqueue._cli.options import discover, json_option, redis_option, timeout_option, with_admin
from aioqueue._cli.output import No, echo, emit_json, jsonable, problems_found, table
from aioqueue._cli.target import load_target
from aioqueue._client.queue import Queue
from aioqueue._redis.errors import mapped_errors, redact
from aioqueue.admin import Admin, QueueInfo, WorkerInfo, set_aside_record
from aioqueue.errors import (
    AioqueueError,
    ConfigurationError,
    JobAborted,
    JobFailed,
    JobNotFound,
    ResultTimeout,
)
from aioqueue.task import Task


def _parse_value(text: str) -> Any:
    """A JSON value where the text is one (1, 2.5, true, null, [..], {..}, "s"), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _signing_key(key: str | None, key_file: Path | None) -> bytes | str | None:
    if key is not None and key_file is not None:
        raise click.UsageError("give --signing-key or --signing-key-file, not both")
    if key_file is None:
        return key or None
    try:
        return key_file.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the signing key: {exc}") from None


# -- enqueue ---------------------------------------------------------------------------


@click.command()
@click.argument("task_spec", metavar="MODULE:TASK")
@click.argument("args", nargs=-1)
@click.option("-k", "--kwarg", "kwargs", multiple=True, help="NAME=VALUE, parsed like ARGS.")
@click.option("--queue", help="Overrides the task's queue.  [default: the task's, or default]")
@click.option("--delay", type=click.FloatRange(min=0), help="Seconds before the job may run.")
@click.option("--wait", is_flag=True, help="Wait for the job and print its result.")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option(
    "--signing-key",
    envvar="AIOQUEUE_SIGNING_KEY",
    show_envvar=True,
    help="Sign the job for workers that verify (prefer the variable: a flag shows in ps).",
)
@click.option(
    "--signing-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AIOQUEUE_SIGNING_KEY_FILE",
    show_envvar=True,
    help="Read the signing key from this file (one trailing newline ignored).",
)
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
    signing_key: str | None,
    signing_key_file: Path | None,
    as_json: bool,
    redis_url: str,
) -> None:
    """Enqueue a job of MODULE:TASK with ARGS (JSON values where they parse, else strings).

    Prints the job id, or with --wait the result (exit 1 if the job failed, was
    aborted or was set aside by a worker, for example for a missing signature).
    """

    task = load_target(task_spec)
    if not isinstance(task, Task):
        raise ConfigurationError(f"{task_spec!r} is not a task (got {type(task).__name__})")
    key = _signing_key(signing_key, signing_key_file)
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
            client_timeout = min(timeout or 5.0, 10.0)
            async with Queue(redis_url, timeout=client_timeout, signing_key=key) as q:
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
                except JobAborted as exc:
                    out["status"] = "aborted"
                    out["reason"] = exc.reason
                except (ResultTimeout, JobNotFound):
                    try:
                        out["status"] = str(await job.status())
                    except JobNotFound:
                        out["status"] = "missing"
                        found = None
                        # a worker that cannot run it sets it aside: say so, and why
                        with contextlib.suppress(AioqueueError):  # a look only
                            found = await q.read(lambda r: set_aside_record(r, job.queue, job.id))
                        if found is not None:
                            out["status"] = "set aside"
                            out["garbage_key"], out["reason"] = found
                return out

    out = anyio.run(main)
    if as_json:
        emit_json(out)
    elif not wait:
        echo(out["id"])
    elif out["status"] == "complete":
        result = out["result"]
        if isinstance(result, str):
            echo(result, lines=True)
        else:
            echo(json.dumps(result, default=jsonable))
    if wait and out["status"] != "complete":
        raise No(_not_complete(out, timeout))


def _not_complete(out: dict[str, Any], timeout: float) -> str:
    job, status = out["id"], out["status"]
    if status == "failed":
        return f"job {job} failed: {out['error']['type']}: {out['error']['message']}"
    if status == "aborted":
        return f"job {job} was aborted" + (f": {out['reason']}" if out["reason"] else "")
    if status == "set aside":
        why = out["reason"] or "no reason recorded"
        return f"job {job} was set aside by a worker ({out['garbage_key']}): {why}"
    return f"job {job} did not finish within {timeout}s (status: {status})"


# -- info --------------------------------------------------------------------------------


@click.command()
@click.option(
    "--queue", "queues", multiple=True, help="Queue to show (repeatable).  [default: all]"
)
@json_option
@redis_option
@timeout_option
def info(queues: tuple[str, ...], as_json: bool, redis_url: str, redis_timeout: float) -> None:
    """Queues with their depths and throughput, and the workers alive.

    A key holding garbage shows as '?' and the command exits 2 saying which.
    """

    async def main(admin: Admin) -> tuple[list[QueueInfo], bool]:
        names, truncated = await discover(admin, queues)
        now = await admin.now_ms()
        return [await admin.queue(name, now) for name in names], truncated

    found, truncated = with_admin(redis_url, main, redis_timeout)
    problems = [f"queue {q.name}: {p}" for q in found for p in q.problems]
    if as_json:
        emit_json(
            {
                "redis": redact(redis_url),
                "queues": [asdict(q) for q in found],
                "discovery_truncated": truncated,
            }
        )
    elif not found:
        echo(f"no queues found in {redact(redis_url)}")
    else:
        _info_tables(found, truncated)
    if problems:
        raise problems_found(problems)


def _info_tables(found: list[QueueInfo], truncated: bool) -> None:
    table(
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
    echo("")
    if not workers:
        echo("no workers alive")
    else:
        table(
            ["WORKER", "QUEUES", "HOST", "PID", "RUNNING", "DONE", "HEARTBEAT"],
            [
                [
                    w.id,
                    ",".join(qs),
                    w.host,
                    w.pid,
                    f"{w.running}/{w.concurrency}",
                    w.done,
                    f"{w.seconds_since_heartbeat:.1f}s ago",
                ]
                for w, qs in workers
            ],
        )
    if truncated:
        echo("\n(queue discovery stopped early: name queues with --queue)", lines=True)


def _alive_by_id(found: list[QueueInfo]) -> list[tuple[WorkerInfo, list[str]]]:
    by_id: dict[str, tuple[WorkerInfo, list[str]]] = {}
    for q in found:
        for w in q.workers:
            if w.alive:
                by_id.setdefault(w.id, (w, []))[1].append(q.name)
    return sorted(by_id.values(), key=lambda item: item[0].id)


# -- check -------------------------------------------------------------------------------


@click.command()
@click.option("--queue", "queues", multiple=True, help="Queue (repeatable).  [default: all]")
@click.option("--this-host", is_flag=True, help="Only workers on this host (a container probe).")
@json_option
@redis_option
@timeout_option
def check(
    queues: tuple[str, ...], this_host: bool, as_json: bool, redis_url: str, redis_timeout: float
) -> None:
    """Exit 0 when a worker's heartbeat is fresh, else 1: for liveness probes.

    Garbage in a queue's keys is reported on stderr; it fails the probe (exit 2)
    only when no live worker was found, as the answer is then unknown.
    """

    async def main(admin: Admin) -> list[QueueInfo]:
        names, _ = await discover(admin, queues)
        now = await admin.now_ms()
        return [await admin.queue(name, now) for name in names]

    found = with_admin(redis_url, main, redis_timeout)
    problems = [f"queue {q.name}: {p}" for q in found for p in q.problems]
    host = socket.gethostname()
    alive = [w for w, _ in _alive_by_id(found) if not this_host or w.host == host]
    if as_json:
        emit_json({"ok": bool(alive), "alive": [asdict(w) for w in alive], "problems": problems})
    elif alive:
        echo(f"ok: {len(alive)} worker(s) alive")
    if not alive and problems:
        raise problems_found(problems)
    if problems:  # a healthy worker is not restarted for a junk value next to it
        problems_found(problems).show()
    if not alive:
        where = f" on {host}" if this_host else ""
        raise No(f"no worker with a fresh heartbeat{where}")
