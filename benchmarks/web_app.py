"""The web benchmark's app: ``GET /`` enqueues a no-op job and awaits its result.

    BENCH_LIB=saq uvicorn web_app:app      (run by web.py, in that library's venv)

One Starlette app for every library: the client (``apps.<lib>_app.Adapter``,
the same one the other scenarios use) is opened once in the lifespan and
shared by every request, as a web app would. A request whose enqueue or wait
fails answers 500, so the load generator counts it as an error.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))

LIB = os.environ.get("BENCH_LIB", "aioqueue")
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_ids = itertools.count()
_state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    adapter = importlib.import_module(f"apps.{LIB}_app").Adapter(URL)
    await adapter.open()
    _state["adapter"] = adapter
    if os.environ.get("BENCH_GC_FREEZE", "1") == "1":
        # as a tuned app does once it has started (docs/production.md): what the imports
        # and the start made is not walked by each full collection, a pause of every
        # request in flight; the same for every library
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        await adapter.close()


async def enqueue_and_await(request: Request) -> PlainTextResponse:
    adapter = _state["adapter"]
    try:
        handle = await adapter.enqueue("noop", next(_ids) % 4_000_000)
        await adapter.result(handle)
    except Exception as exc:
        return PlainTextResponse(f"{type(exc).__name__}: {exc}", status_code=500)
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/", enqueue_and_await)], lifespan=lifespan)
