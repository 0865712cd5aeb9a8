"""``aioqueue dashboard``: the web dashboard (``aioqueue.web``) served by uvicorn.

Needs the ``web`` extra (``pip install 'aioqueue[web]'``); without it the
command says so and exits 2, and the rest of the CLI does not care.
"""

from __future__ import annotations

import click

from aioqueue._cli.output import Failed

__all__ = ["dashboard"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port."
)
@click.option("--read-only", is_flag=True, help="No buttons; every write endpoint answers 405.")
@click.option(
    "--redis-url",
    envvar="AIOQUEUE_REDIS_URL",
    show_envvar=True,
    help="Redis to show.  [default: redis://localhost:6379/0]",
)
@click.option("--queue", "queues", multiple=True, help="Show only this queue (repeatable).")
@click.option(
    "--serializer",
    default="msgpack",
    show_default=True,
    help="How the producers encode arguments (msgpack, json; pickle only if you trust Redis).",
)
@click.option(
    "--root-path", default="", help="The path a proxy serves the dashboard under (e.g. /queues)."
)
@click.pass_context
def dashboard(
    ctx: click.Context,
    host: str,
    port: int,
    read_only: bool,
    redis_url: str | None,
    queues: tuple[str, ...],
    serializer: str,
    root_path: str,
) -> None:
    """Serve the web dashboard: queues, jobs, workers and cron, live.

    It listens on 127.0.0.1 unless told otherwise: it has no login of its own
    (mount it in your app with ``authorize=`` for that, see the guide), so give
    it --read-only or keep it on a trusted network.
    """
    try:
        import uvicorn

        from aioqueue.web import create_app
    except ImportError as exc:
        raise Failed(
            f"the dashboard needs the web extra: pip install 'aioqueue[web]' ({exc})"
        ) from None
    app = create_app(
        redis_url, read_only=read_only, queues=list(queues) or None, serializer=serializer
    )
    level = (ctx.obj or {}).get("log_level", "info")
    uvicorn.run(app, host=host, port=port, root_path=root_path, log_level=level)
