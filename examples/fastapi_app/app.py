"""Endpoints that enqueue a job, await its result with a timeout, and stream its status.

    POST /reports                 {"user_id": 7}  -> 202 {"job_id": ...}
    GET  /jobs/{id}/result?timeout=5              -> 200 result | 202 still running | 404
    GET  /jobs/{id}/events                        -> text/event-stream until the job ends

One ``Queue`` per app, opened in the lifespan: every request shares its few
pipelined connections and its single pub/sub connection for results, so the
app holds the same connections at any load, and awaiting a result never polls
Redis. Closing it (at shutdown) ends the awaits still pending (``QueueClosed``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from aioqueue import Job, JobAborted, JobFailed, JobNotFound, Queue, ResultTimeout
from examples.fastapi_app.tasks import broken_report, build_report


class ReportRequest(BaseModel):
    user_id: int
    seconds: float = Field(0.2, ge=0, le=60)
    fail: str | None = None  # a reason to fail, to see a failure end to end


def create_app(
    redis_url: str | None = None, queue_name: str = "default", keepalive: float = 15.0
) -> FastAPI:
    """keepalive: seconds between SSE comments while a job runs (proxies drop idle streams)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # no URL: the Queue reads AIOQUEUE_REDIS_URL (else the local default)
        async with Queue(redis_url, name=queue_name) as queue:
            app.state.queue = queue
            yield

    app = FastAPI(title="aioqueue example", lifespan=lifespan)

    def job_of(request: Request, job_id: str) -> Job[Any]:
        queue: Queue = request.app.state.queue
        return queue.job(job_id)

    @app.post("/reports", status_code=202)
    async def create_report(body: ReportRequest, request: Request) -> dict[str, str]:
        queue: Queue = request.app.state.queue
        if body.fail is not None:
            job: Job[Any] = await queue.enqueue(broken_report, body.fail)
        else:
            job = await queue.enqueue(build_report, body.user_id, body.seconds)
        return {"job_id": job.id}

    @app.get("/jobs/{job_id}/result")
    async def result(
        job_id: str, request: Request, timeout: float = Query(5.0, ge=0, le=60)
    ) -> JSONResponse:
        job = job_of(request, job_id)
        try:
            value = await job.result(timeout=timeout)
        except ResultTimeout:
            status = await job.status()
            return JSONResponse({"job_id": job_id, "status": status}, status_code=202)
        except JobNotFound:
            raise HTTPException(404, f"no job {job_id}") from None
        except JobFailed as exc:
            error = {"type": exc.exc_type, "message": exc.exc_message}
            return JSONResponse({"job_id": job_id, "status": "failed", "error": error})
        except JobAborted:
            return JSONResponse({"job_id": job_id, "status": "aborted"})
        return JSONResponse({"job_id": job_id, "status": "complete", "result": value})

    @app.get("/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        job = job_of(request, job_id)
        try:
            first = await job.status()
        except JobNotFound:
            raise HTTPException(404, f"no job {job_id}") from None
        return StreamingResponse(
            _stream(job, str(first), keepalive), media_type="text/event-stream"
        )

    return app


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def _stream(job: Job[Any], status: str, keepalive: float) -> AsyncIterator[str]:
    """The status now, any change seen at each keepalive, then the outcome once it exists.

    The outcome arrives through the queue's pub/sub waiter; the keepalive tick
    only re-reads the status to report queued -> active.
    """
    yield _sse("status", {"status": status})
    while True:
        try:
            value = await job.result(timeout=keepalive)
        except ResultTimeout:
            now = str(await job.status())
            if now != status:
                status = now
                yield _sse("status", {"status": status})
            else:
                yield ": keepalive\n\n"
            continue
        except JobFailed as exc:
            yield _sse("failed", {"type": exc.exc_type, "message": exc.exc_message})
        except JobAborted:
            yield _sse("aborted", {})
        except JobNotFound:
            yield _sse("missing", {})
        else:
            yield _sse("complete", {"result": value})
        return


app = create_app()
