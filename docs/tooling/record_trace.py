"""Records the trace of docs/tracing.md and draws it: docs/images/trace.svg and .png.

    .venv/bin/python docs/tooling/record_trace.py

A private redis-server, the SDK's in-memory exporter, a request span that enqueues a
signed job, a worker in this process whose first attempt fails and second succeeds:
the spans ``aioqueue.otel`` records, drawn by ``trace_svg.py``, then photographed by
Debian's headless chromium for the PNG.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402
from trace_svg import render  # noqa: E402

import aioqueue.logging  # noqa: E402
from aioqueue import Queue, Worker, current_job, task  # noqa: E402
from aioqueue.otel import OpenTelemetryMiddleware  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

IMAGES = ROOT / "docs" / "images"


@task(max_attempts=3, backoff=0.005, backoff_max=0.005)
async def send_welcome_email(user_id: int) -> str:
    await asyncio.sleep(0.004)  # the mail server's answer
    if current_job().attempt == 1:
        raise ConnectionError("smtp.example.com refused the connection")
    return f"sent to user {user_id}"


async def record(url: str) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("web-app")
    key = "signing-key-of-the-docs"
    middleware = [OpenTelemetryMiddleware(tracer_provider=provider)]
    worker = Worker(
        [send_welcome_email],
        redis_url=url,
        queues=["emails"],
        signing_key=key,
        middleware=middleware,
    )
    async with Queue(url, name="emails", signing_key=key, middleware=middleware) as queue:
        run = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)  # a picture, not a test: let the worker settle in first
        with tracer.start_as_current_span("POST /signup", kind=SpanKind.SERVER):
            await asyncio.sleep(0.002)  # the request's own work
            job = await queue.enqueue(send_welcome_email, 42)
            await asyncio.sleep(0.001)
        await job.result(timeout=10)
        await asyncio.sleep(0.2)  # the last settle span
        worker.stop()
        await run
    return list(exporter.get_finished_spans())


def main() -> None:
    aioqueue.logging.configure(level="warning")
    server = RedisServer(port=free_port())
    server.start()
    try:
        spans = asyncio.run(record(server.url))
    finally:
        server.cleanup()
    svg = render(spans, "POST /signup → enqueue → attempt 1 fails → attempt 2 succeeds")
    IMAGES.mkdir(exist_ok=True)
    (IMAGES / "trace.svg").write_text(svg)
    width, height = (int(v) for v in svg.split('viewBox="0 0 ')[1].split('"')[0].split())
    with tempfile.TemporaryDirectory() as scratch:
        page = Path(scratch) / "trace.html"
        page.write_text(f"<html><body style='margin:0'>{svg}</body></html>")
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={IMAGES / 'trace.png'}",
                f"--window-size={width},{height}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    print(f"wrote {IMAGES / 'trace.svg'} and trace.png ({len(spans)} spans)")


if __name__ == "__main__":
    main()
