"""``aioqueue jobs failed|retry|purge``: the dead-lettered jobs of a queue.

``retry --all`` and ``purge --all`` act on the jobs dead when the command
starts, each once (see ``Admin.requeue``): a job that fails again at once is
not retried again by the same command, and the count printed is the number of
jobs acted on. They work in pages, each call with its own deadline, so a dead
set of any size is handled; if Redis stops answering half way, the error says
how many were done.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click

from aioqueue._cli.options import discover, json_option, redis_option, timeout_option, with_admin
from aioqueue._cli.output import Failed, No, echo, emit_json, problems_found, table
from aioqueue.admin import Admin, DeadJob
from aioqueue.errors import AioqueueError, RedisRefused
from aioqueue.task import DEFAULT_QUEUE


@click.group()
def jobs() -> None:
    """Dead-lettered jobs: list, retry, purge."""


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@jobs.command()
@click.option("--queue", "queues", multiple=True, help="Queue (repeatable).  [default: all]")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@redis_option
@timeout_option
def failed(
    queues: tuple[str, ...], limit: int, as_json: bool, redis_url: str, redis_timeout: float
) -> None:
    """The newest failed (dead-lettered) jobs per queue.

    A job whose record cannot be read is listed with '?' where it is
    unreadable; the command then exits 2 with one line saying what it met.
    """

    async def main(admin: Admin) -> tuple[list[DeadJob], list[str]]:
        names, _ = await discover(admin, queues)
        out: list[DeadJob] = []
        problems: list[str] = []
        for name in names:
            try:
                out += await admin.dead_jobs(name, limit)
            except RedisRefused as exc:  # this queue's dead set is garbage: the others are not
                if exc.code == "NOPERM":
                    raise
                problems.append(f"queue {name}: {exc}")
        return out, problems

    dead, problems = with_admin(redis_url, main, redis_timeout)
    problems += [f"job {d.id} of {d.queue}: {d.problem}" for d in dead if d.problem]
    if as_json:
        emit_json([asdict(d) for d in dead])
    elif not dead and not problems:
        echo("no failed jobs")
    elif dead:
        table(
            ["ID", "QUEUE", "TASK", "ATTEMPTS", "FAILED AT (UTC)", "ERROR"],
            [
                [
                    d.id,
                    d.queue,
                    d.task,
                    d.attempts,
                    _when(d.failed_at_ms),
                    f"{d.error_type}: {d.error_message}"[:80],
                ]
                for d in dead
            ],
        )
    if problems:
        raise problems_found(problems)


def _dead_action(verb: str, past: str) -> click.Command:
    @click.command(name=verb)
    @click.argument("ids", nargs=-1)
    @click.option("--all", "every", is_flag=True, help="Every job failed when the command starts.")
    @click.option("--queue", default=DEFAULT_QUEUE, show_default=True)
    @json_option
    @redis_option
    @timeout_option
    def command(
        ids: tuple[str, ...],
        every: bool,
        queue: str,
        as_json: bool,
        redis_url: str,
        redis_timeout: float,
    ) -> None:
        if bool(ids) == every:
            raise click.UsageError("give job IDs or --all (not both)")
        unique = list(dict.fromkeys(ids))  # an id given twice is acted on once
        done = [0]

        def progress(n: int) -> None:
            done[0] = n

        async def main(admin: Admin) -> int:
            fn = admin.requeue if verb == "retry" else admin.purge
            return await fn(queue, None if every else unique, progress)

        try:
            # no deadline for the whole command: each call has its own
            count: Any = with_admin(redis_url, main, redis_timeout, bounded=False)
        except AioqueueError as exc:
            if not done[0]:
                raise
            raise Failed(f"{past} {done[0]} job(s) of queue {queue}, then stopped: {exc}") from None
        if as_json:
            emit_json({"queue": queue, past: count})
        else:
            echo(f"{past} {count} job(s) of queue {queue}")
        if unique and count < len(unique):
            raise No(f"{len(unique) - count} of {len(unique)} id(s) are not failed jobs of {queue}")

    command.help = (
        f"{verb.capitalize()} failed jobs: IDs, or --all (those failed when it starts, once each)."
    )
    return command


jobs.add_command(_dead_action("retry", "requeued"))
jobs.add_command(_dead_action("purge", "purged"))
