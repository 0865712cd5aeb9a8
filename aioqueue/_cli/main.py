"""The ``aioqueue`` command. The only place that configures logging and picks uvloop.

    aioqueue run app.tasks:worker [--processes N] [--burst] [--dev] [--reload] ...
    aioqueue enqueue app.tasks:send_email '"a@b.c"' --wait
    aioqueue info | jobs failed | jobs retry | jobs purge | check
    aioqueue cron app.tasks:worker [--json]

Settings of ``run``: a CLI flag wins over its AIOQUEUE_* environment variable,
which wins over the Worker object's own value (see ``aioqueue.supervisor``).
Errors a user can fix (a bad import path, Redis unreachable) print one line and
exit 2; ``check`` exits 1 when no worker is alive. So does any other error: one
line naming it, the traceback only with ``--log-level debug``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aioqueue._cli.admin import check, enqueue, info
from aioqueue._cli.cron import cron_schedule
from aioqueue._cli.dashboard import dashboard
from aioqueue._cli.events import events
from aioqueue._cli.jobs import jobs
from aioqueue._cli.output import Failed
from aioqueue._redis.errors import UNAVAILABLE, unavailable
from aioqueue._worker.settings import env_var
from aioqueue.errors import AioqueueError
from aioqueue.logging import configure


def _single(exc: BaseException) -> BaseException:
    """The one exception inside task groups' wrappings of one (a worker that
    refused to start, inside the runner's task group), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except AioqueueError as exc:
            raise Failed(str(exc)) from None
        except UNAVAILABLE as exc:  # a raw connection error that escaped the mapping
            raise Failed(str(unavailable(None, exc))) from None
        except Exception as exc:  # a bug or garbage we did not foresee: still one line
            if isinstance(_single(exc), AioqueueError):
                raise Failed(str(_single(exc))) from None
            if (ctx.obj or {}).get("log_level") == "debug":
                traceback.print_exc()
            raise Failed(
                f"unexpected {type(exc).__name__}: {exc} (--log-level debug shows the traceback)"
            ) from None


@click.group(cls=_Group)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    envvar="AIOQUEUE_LOG_FORMAT",
    show_default=True,
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    envvar="AIOQUEUE_LOG_LEVEL",
    show_default=True,
)
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str) -> None:
    """aioqueue: an asyncio job queue on Redis."""
    ctx.obj = {"log_format": log_format, "log_level": log_level}


RUN_HELP = """Run the worker TARGET (module:attribute, a Worker or a function returning one).

By default a supervisor runs --processes worker processes (default: the CPUs
available), restarts crashed or unresponsive ones with backoff and forwards
signals: SIGTERM/SIGINT drain and exit 0, a second one or SIGQUIT stops fast,
SIGHUP restarts the processes one at a time, SIGTTIN/SIGTTOU add or remove one.
--processes 0 runs the worker in this process, without a supervisor.

Precedence of settings: a flag here, else its AIOQUEUE_* environment variable
(shown with each flag), else the value the Worker object was built with.
"""


def env_option(flag: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An option of ``aioqueue run`` that its ``AIOQUEUE_*`` variable also sets."""
    return click.option(flag, envvar=env_var(flag.split("/")[0]), show_envvar=True, **kwargs)


@cli.command(help=RUN_HELP)
@click.argument("target")
@env_option(
    "--processes",
    type=click.IntRange(min=0),
    help="Worker processes to supervise; 0: run in this process.  [default: CPUs]",
)
@env_option("--redis-url")
@env_option(
    "--queues",
    help="Comma-separated, highest priority first.",
)
@env_option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Jobs at once per process.",
)
@env_option(
    "--prefetch",
    type=click.IntRange(min=0),
    help="I/O-bound jobs held ahead of a free slot while jobs are short."
    "  [default: concurrency; 0 for concurrency 1]",
)
@env_option(
    "--cpu-slots",
    type=click.IntRange(min=1),
    help="CPU-bound jobs (cpu=True, plain def) held at once per process.  [default: 1]",
)
@env_option(
    "--process-pool",
    type=click.IntRange(min=1),
    help="Pool processes per worker for executor='process' tasks.  [default: CPUs]",
)
@env_option(
    "--lease",
    type=float,
    help="Seconds a job is held without a heartbeat before another worker may take it.",
)
@env_option(
    "--heartbeat",
    type=float,
    help="Seconds between heartbeats; shorter than the lease.  [default: lease / 3]",
)
@env_option(
    "--grace",
    type=click.FloatRange(min=0),
    help="Seconds running jobs get to finish on SIGTERM.",
)
@env_option(
    "--burst/--no-burst",
    default=None,
    help="Exit 0 once the queues are drained.",
)
@env_option(
    "--max-jobs-per-child",
    type=click.IntRange(min=1),
    help="Replace a process after this many jobs (drained first).",
)
@env_option(
    "--events-maxlen",
    type=click.IntRange(min=0),
    help="Entries each queue's event stream keeps (about); 0: write none.  [default: 10000]",
)
@env_option(
    "--max-memory-per-child",
    help="Replace a process whose RSS exceeds this (512M, 2G; Linux).",
)
@env_option(
    "--pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the supervisor's pid here.",
)
@click.option("--reload", is_flag=True, help="Development: restart processes when code changes.")
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory to watch with --reload (repeatable).  [default: .]",
)
@env_option(
    "--dev",
    is_flag=True,
    help="No Redis configured or answering: start a private one under ./.aioqueue/.",
)
@env_option(
    "--ping-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds a process's event loop may leave a ping unanswered.",
)
@env_option(
    "--restart-backoff",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    help="First delay before restarting a crashed process; doubles while it keeps crashing.",
)
@env_option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus /metrics on this port (from the supervisor, summing every"
    " process; 0: any free port, logged). Needs aioqueue[prometheus].",
)
@env_option(
    "--metrics-host",
    default="0.0.0.0",  # noqa: S104  (the scraper runs on another host)
    show_default=True,
    help="Address /metrics listens on.",
)
@click.option("--no-uvloop", is_flag=True, help="Use the default asyncio event loop.")
@click.option("--child", is_flag=True, hidden=True)
@click.pass_context
def run(ctx: click.Context, /, target: str, **opts: Any) -> None:
    from aioqueue._cli.runner import RunOptions, run_target

    configure(fmt=ctx.obj["log_format"], level=ctx.obj["log_level"])
    cli_args = ["--log-format", ctx.obj["log_format"], "--log-level", ctx.obj["log_level"]]
    code = run_target(target, RunOptions(**opts), cli_args)
    ctx.exit(code)


def main() -> None:
    cli()


cli.add_command(enqueue)
cli.add_command(info)
cli.add_command(jobs)
cli.add_command(check)
cli.add_command(cron_schedule)
cli.add_command(dashboard)
cli.add_command(events)
