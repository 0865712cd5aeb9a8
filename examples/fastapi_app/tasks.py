"""The tasks behind the example app, and the worker that runs them."""

from __future__ import annotations

import anyio

from aioqueue import Worker, task


@task
async def build_report(user_id: int, seconds: float = 0.2) -> dict[str, int]:
    await anyio.sleep(seconds)  # stands for a slow query or an external API
    return {"user_id": user_id, "rows": user_id * 10}


@task(max_attempts=1)
async def broken_report(reason: str) -> None:
    raise RuntimeError(reason)


worker = Worker([build_report, broken_report])
