"""The ``aioqueue`` command. The only place that configures logging and picks uvloop."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from aioqueue.errors import AioqueueError, ConfigurationError
from aioqueue.logging import configure
from aioqueue.worker import Worker


def load_target(spec: str) -> Any:
    """Imports ``module:attribute``; a clear error when either is missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def load_worker(spec: str) -> Worker:
    worker = load_target(spec)
    if callable(worker) and not isinstance(worker, Worker):
        worker = worker()
    if not isinstance(worker, Worker):
        raise ConfigurationError(f"{spec!r} is not a Worker (got {type(worker).__name__})")
    return worker


def run_worker(worker: Worker, *, use_uvloop: bool = True) -> None:
    import anyio

    async def main() -> None:
        await worker.run(handle_signals=True)

    anyio.run(main, backend_options={"use_uvloop": use_uvloop})


@click.group()
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
def cli(log_format: str, log_level: str) -> None:
    """aioqueue: an asyncio job queue on Redis."""
    configure(fmt=log_format, level=log_level)


@cli.command()
@click.argument("target")
@click.option("--redis-url", envvar="AIOQUEUE_REDIS_URL", help="Overrides the worker's Redis URL.")
@click.option("--queues", envvar="AIOQUEUE_QUEUES", help="Comma-separated, highest priority first.")
@click.option(
    "--concurrency", type=int, envvar="AIOQUEUE_CONCURRENCY", help="Jobs at once per process."
)
@click.option("--no-uvloop", is_flag=True, help="Use the default asyncio event loop.")
def run(
    target: str, redis_url: str | None, queues: str | None, concurrency: int | None, no_uvloop: bool
) -> None:
    """Run the worker TARGET (module:attribute)."""
    worker = load_worker(target)
    if redis_url:
        worker.redis_url = redis_url
    if queues:
        worker.set_queues(q.strip() for q in queues.split(","))
    if concurrency:
        worker.concurrency = concurrency
    run_worker(worker, use_uvloop=not no_uvloop)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except AioqueueError as exc:
        click.echo(f"aioqueue: {exc}", err=True)
        sys.exit(2)
