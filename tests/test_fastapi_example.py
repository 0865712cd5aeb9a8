"""examples/fastapi_app against a real Redis and a real in-process worker (httpx ASGI)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from aioqueue import Worker
from examples.fastapi_app.app import create_app
from examples.fastapi_app.tasks import broken_report, build_report
from tests.conftest import running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the endpoints, not the loop, are under test here


@pytest.fixture
async def app(redis_url: str, queue_name: str) -> AsyncIterator[FastAPI]:
    app = create_app(redis_url, queue_name, keepalive=0.05)
    async with app.router.lifespan_context(app):  # httpx's ASGI transport runs no lifespan
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
        yield c


def worker(redis_url: str, queue_name: str) -> Worker:
    return Worker([build_report, broken_report], redis_url=redis_url, queues=[queue_name])


async def test_enqueue_then_await_the_result(
    client: httpx.AsyncClient, redis_url: str, queue_name: str
) -> None:
    created = await client.post("/reports", json={"user_id": 7, "seconds": 0})
    assert created.status_code == 202
    job_id = created.json()["job_id"]
    # no worker yet: the wait times out and says where the job is
    pending = await client.get(f"/jobs/{job_id}/result", params={"timeout": 0.05})
    assert pending.status_code == 202 and pending.json()["status"] == "queued"
    async with running(worker(redis_url, queue_name)):
        done = await client.get(f"/jobs/{job_id}/result", params={"timeout": 5})
    assert done.status_code == 200
    assert done.json() == {
        "job_id": job_id,
        "status": "complete",
        "result": {"user_id": 7, "rows": 70},
    }


async def test_failed_and_unknown_jobs(
    client: httpx.AsyncClient, redis_url: str, queue_name: str
) -> None:
    job_id = (await client.post("/reports", json={"user_id": 1, "fail": "no data"})).json()[
        "job_id"
    ]
    async with running(worker(redis_url, queue_name)):
        out = (await client.get(f"/jobs/{job_id}/result")).json()
    assert out["status"] == "failed"
    assert out["error"] == {"type": "builtins.RuntimeError", "message": "no data"}
    assert (await client.get("/jobs/nope/result")).status_code == 404
    assert (await client.get("/jobs/nope/events")).status_code == 404


async def test_events_stream_the_status_until_the_result(
    client: httpx.AsyncClient, redis_url: str, queue_name: str
) -> None:
    job_id = (await client.post("/reports", json={"user_id": 3, "seconds": 0.3})).json()["job_id"]
    async with running(worker(redis_url, queue_name)):
        response = await client.get(f"/jobs/{job_id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1][6:]))
        for block in response.text.strip().split("\n\n")
        if block.startswith("event:")
    ]
    assert events[0][0] == "status"
    assert ("status", {"status": "active"}) in events  # seen at a keepalive tick while it ran
    assert events[-1] == ("complete", {"result": {"user_id": 3, "rows": 30}})
