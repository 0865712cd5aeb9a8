"""The dashboard without a browser: its pages and JSON API against a real Redis
(through httpx's ASGI transport), its guards (read-only, authorize, CSRF), its
actions through the library's Functions, paging by cursor, search, the one
event-stream reader, and ``aioqueue dashboard`` as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from aioqueue import Queue, Worker
from aioqueue._protocol.keys import QueueKeys
from aioqueue.cron import every
from aioqueue.web import create_app
from aioqueue.web._hub import Hub
from tests.conftest import ROOT
from tests.redis_server import free_port
from tests.tasks import add, boom
from tests.web_helpers import events_key

pytestmark = pytest.mark.anyio

NASTY = '<script>alert("x")</script>'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the dashboard serves on asyncio (uvicorn); one loop kind is enough


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(redis_url)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dash"
    ) as c:
        yield c
    await app.state.aioqueue_dashboard.aclose()


async def csrf_of(client: httpx.AsyncClient) -> str:
    answer = await client.get("/api/csrf")
    token: str = answer.json()["csrf"]
    return token


async def dead_jobs(queue: Queue, redis_url: str, queue_name: str, n: int) -> list[str]:
    jobs = [await queue.enqueue(boom, f"no <b>{i}</b>") for i in range(n)]
    await Worker([boom], redis_url=redis_url, queues=[queue_name], burst=True).run()
    return [j.id for j in jobs]


async def test_pages_render_and_escape_a_job_id_holding_markup(
    client: httpx.AsyncClient, queue: Queue, queue_name: str
) -> None:
    await queue.enqueue(add.options(job_id=NASTY), 1, 2)
    pages = [
        "/",
        f"/queue?name={queue_name}",
        f"/queue?name={queue_name}&q=add",
        "/job",
        "/workers",
        "/cron",
    ]
    for path in pages:
        params = {"queue": queue_name, "id": NASTY} if path == "/job" else None
        answer = await client.get(path, params=params)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert NASTY not in answer.text, path
        csp = answer.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce is not None and "unsafe-inline" not in csp
        # every script and stylesheet carries this answer's nonce, none is inline
        assert answer.text.count(f'nonce="{nonce.group(1)}"') == 2
    job_page = await client.get("/job", params={"queue": queue_name, "id": NASTY})
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in job_page.text


async def test_api_pages_dead_jobs_by_cursor_newest_first_without_repeats(
    client: httpx.AsyncClient, queue: Queue, redis_url: str, queue_name: str
) -> None:
    ids = await dead_jobs(queue, redis_url, queue_name, 7)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"queue": queue_name, "state": "dead", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/jobs", params=params)).json()
        assert page["total"] == 7
        seen += [r["id"] for r in page["rows"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    rows = (await client.get("/api/jobs", params={"queue": queue_name, "state": "dead"})).json()
    died = [r["score_ms"] for r in rows["rows"]]
    assert died == sorted(died, reverse=True)
    assert rows["rows"][0]["error_type"] == "builtins.ValueError"


async def test_search_by_id_task_and_text_in_arguments_or_error(
    client: httpx.AsyncClient, queue: Queue, redis_url: str, queue_name: str
) -> None:
    ids = await dead_jobs(queue, redis_url, queue_name, 3)
    await queue.enqueue(add, 40, 2)

    async def search(state: str, q: str, **extra: str) -> dict[str, Any]:
        params = {"queue": queue_name, "state": state, "q": q, **extra}
        found: dict[str, Any] = (await client.get("/api/jobs", params=params)).json()
        return found

    by_id = await search("dead", ids[1])
    assert [r["id"] for r in by_id["exact"]] == [ids[1]] and by_id["searched"] == 0
    by_error = await search("dead", "NO <B>2</B>")  # any case
    assert [r["id"] for r in by_error["rows"]] == [ids[2]] and by_error["searched"] == 3
    by_task = await search("ready", "tests.tasks.add")
    assert len(by_task["rows"]) == 1 and by_task["rows"][0]["args"] == "40, 2"
    by_args = await search("ready", "40, 2")
    assert len(by_args["rows"]) == 1
    assert (await search("ready", "nothing like it"))["rows"] == []


async def test_actions_go_through_the_functions_and_change_redis(
    client: httpx.AsyncClient, queue: Queue, redis_url: str, queue_name: str
) -> None:
    dead = await dead_jobs(queue, redis_url, queue_name, 3)
    waiting = await queue.enqueue(add, 1, 1)
    token = await csrf_of(client)
    headers = {"x-csrf-token": token}
    keys = QueueKeys(queue_name)

    async def act(body: dict[str, Any]) -> httpx.Response:
        return await client.post(
            "/api/actions", json={"queue": queue_name, **body}, headers=headers
        )

    retried = await act({"action": "retry", "jobs": [dead[0]]})
    assert retried.status_code == 200 and retried.json()["done"] == 1
    assert await queue.redis.hget(keys.job(dead[0]), "s") == b"queued"
    aborted = await act({"action": "abort", "jobs": [waiting.id]})
    assert aborted.json()["before"] == {waiting.id: "queued"}
    assert await queue.redis.hget(keys.job(waiting.id), "s") == b"aborted"
    # delete is a purge: only dead jobs go, a queued one stays
    deleted = await act({"action": "delete", "jobs": [dead[1], dead[0]]})
    assert deleted.json()["done"] == 1
    assert not await queue.redis.exists(keys.job(dead[1]))
    assert await queue.redis.hget(keys.job(dead[0]), "s") == b"queued"
    everything = await act({"action": "retry", "all": True})
    assert everything.json()["done"] == 1 and await queue.redis.zcard(keys.dead) == 0
    assert (await act({"action": "explode", "jobs": [dead[0]]})).status_code == 400


async def test_writes_need_the_csrf_token_of_the_cookie(
    client: httpx.AsyncClient, queue: Queue, queue_name: str
) -> None:
    job = await queue.enqueue(add, 1, 1)
    body = {"queue": queue_name, "action": "abort", "jobs": [job.id]}
    await csrf_of(client)  # the cookie is set, but not sent back in the header
    assert (await client.post("/api/actions", json=body)).status_code == 403
    wrong = await client.post("/api/actions", json=body, headers={"x-csrf-token": "x" * 43})
    assert wrong.status_code == 403
    form = {"queue": queue_name, "action": "abort", "job": job.id, "csrf": "y" * 43}
    assert (await client.post("/actions", data=form)).status_code == 403
    assert await job.status() == "queued"
    form["csrf"] = await csrf_of(client)
    done = await client.post("/actions", data=form)
    assert done.status_code == 303 and await job.status() == "aborted"


async def test_read_only_hides_buttons_and_answers_405_to_every_write(
    redis_url: str, queue: Queue, queue_name: str
) -> None:
    dead = await dead_jobs(queue, redis_url, queue_name, 1)
    app = create_app(redis_url, read_only=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as ro:
        token = await csrf_of(ro)
        job_page = await ro.get("/job", params={"queue": queue_name, "id": dead[0]})
        dead_page = await ro.get("/queue", params={"name": queue_name, "state": "dead"})
        for page in (job_page, dead_page):
            assert page.status_code == 200 and "<button" not in page.text.split("</form>")[-1]
            assert 'name="action"' not in page.text
        api = await ro.post(
            "/api/actions",
            json={"queue": queue_name, "action": "retry", "jobs": dead},
            headers={"x-csrf-token": token},
        )
        form = await ro.post(
            "/actions", data={"queue": queue_name, "action": "retry", "job": dead[0], "csrf": token}
        )
        assert api.status_code == form.status_code == 405
        assert api.headers["allow"] == "GET"
    await app.state.aioqueue_dashboard.aclose()
    assert await queue.redis.hget(QueueKeys(queue_name).job(dead[0]), "s") == b"failed"


async def test_authorize_is_asked_for_each_action(
    redis_url: str, queue: Queue, queue_name: str
) -> None:
    asked: list[str] = []

    async def authorize(request: Any, action: str) -> bool:
        asked.append(action)
        return action != "abort" and request.headers.get("x-user") == "ops"

    job = await queue.enqueue(add, 1, 1)
    app = create_app(redis_url, authorize=authorize)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        assert (await c.get("/")).status_code == 403
        c.headers["x-user"] = "ops"
        token = await csrf_of(c)
        assert (await c.get("/api/overview")).status_code == 200
        refused = await c.post(
            "/api/actions",
            json={"queue": queue_name, "action": "abort", "jobs": [job.id]},
            headers={"x-csrf-token": token},
        )
        assert refused.status_code == 403
    await app.state.aioqueue_dashboard.aclose()
    assert asked == ["read", "read", "read", "abort"]
    assert await job.status() == "queued"


async def test_bulk_actions_ask_for_a_confirmation_first(
    client: httpx.AsyncClient, queue: Queue, redis_url: str, queue_name: str
) -> None:
    await dead_jobs(queue, redis_url, queue_name, 2)
    token = await csrf_of(client)
    form = {"queue": queue_name, "action": "delete", "scope": "all", "csrf": token}
    confirm = await client.post("/actions", data=form)
    assert confirm.status_code == 200 and 'name="confirmed" value="1"' in confirm.text
    assert await queue.redis.zcard(QueueKeys(queue_name).dead) == 2
    done = await client.post("/actions", data={**form, "confirmed": "1"})
    assert done.status_code == 303 and "done=delete" in done.headers["location"]
    assert await queue.redis.zcard(QueueKeys(queue_name).dead) == 0


async def test_job_api_has_error_traceback_attempts_worker_and_timeline(
    client: httpx.AsyncClient, queue: Queue, redis_url: str, queue_name: str
) -> None:
    job_id, _another = await dead_jobs(queue, redis_url, queue_name, 2)  # real events, both
    job = (await client.get("/api/job", params={"queue": queue_name, "id": job_id})).json()
    assert job["status"] == "failed" and job["attempts"] == 1 and job["can_retry"]
    assert job["error"]["type"] == "builtins.ValueError"
    assert "raise ValueError" in job["error"]["traceback"]
    assert job["worker"] and job["started_ms"] <= job["ended_ms"] and job["dead_ms"]
    assert [e["event"] for e in job["events"]] == ["enqueued", "started", "failed", "dead"]
    assert all(e["job"] == job_id for e in job["events"])
    assert job["events"][-1]["extra"]["error"] == "builtins.ValueError"
    missing = await client.get("/api/job", params={"queue": queue_name, "id": "nope"})
    assert missing.status_code == 404


async def test_overview_has_an_hour_of_outcomes_and_latency(
    client: httpx.AsyncClient, queue: Queue, redis_url: str, queue_name: str
) -> None:
    await dead_jobs(queue, redis_url, queue_name, 2)
    for i in range(3):
        await queue.enqueue(add, i, i)
    await Worker([add], redis_url=redis_url, queues=[queue_name], burst=True).run()
    await queue.enqueue(add, 9, 9)  # waits: the latency
    data = (await client.get("/api/queue", params={"name": queue_name})).json()
    minutes = data["minutes"]
    assert len(minutes) == 60
    assert sum(m["complete"] for m in minutes) == 3 and sum(m["failed"] for m in minutes) == 2
    assert data["latency_ms"] is not None and data["latency_ms"] >= 0
    assert data["queued"] == 1 and data["failed"] == 2


async def test_workers_and_cron_pages_show_what_workers_registered(
    client: httpx.AsyncClient, redis_url: str, queue_name: str
) -> None:
    worker = Worker(
        [add], redis_url=redis_url, queues=[queue_name], cron=[every(3600, add.call(1, 2))]
    )
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        listed = (await client.get("/api/workers")).json()["workers"]
        mine = [w for w in listed if w["id"] == worker.id]
        assert mine and mine[0]["alive"] and mine[0]["queues"] == [queue_name]
        assert mine[0]["pid"] == os.getpid() and mine[0]["started_ms"]
        schedules = (await client.get("/api/cron")).json()["cron"]
        entry = next(c for c in schedules if c["queue"] == queue_name)
        assert entry["schedule"] == "every 3600s" and entry["timezone"] == "UTC"
        assert entry["next_fire_ms"] % 3_600_000 == 0
        worker.stop()


async def test_one_reader_feeds_every_subscriber(redis_url: str, queue_name: str) -> None:
    from aioqueue.admin import Admin

    admin = Admin(redis_url)
    redis = Redis.from_url(redis_url)

    async def no_queues() -> list[str]:
        return []

    hub = Hub(admin, no_queues)
    try:
        async with Queue(redis_url, name=queue_name) as queue:
            async with hub.subscribe(queue_name) as first, hub.subscribe(queue_name) as second:
                async with hub.subscribe(None, job="j2") as third:
                    for job in ("j1", "j2"):
                        await queue.enqueue(add.options(job_id=job), 1, 1)  # its event: real
                    got = [[(await s.get())["job"] for _ in range(2)] for s in (first, second)]
                    assert got == [["j1", "j2"], ["j1", "j2"]]
                    assert (await third.get())["job"] == "j2"
                    reads = hub.xreads
                    # three browsers, one XREAD per batch of events (one woken by a subscribe)
                    assert reads <= 4
        assert hub._tasks == []  # the last one gone: nothing reads Redis any more
        assert await redis.exists(events_key(queue_name))
    finally:
        await redis.aclose()
        await admin.__aexit__(None, None, None)


def test_dashboard_command_serves_the_app(redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOQUEUE_REDIS_URL": redis_url}
    args = [sys.executable, "-m", "aioqueue", "dashboard", "--port", str(port), "--read-only"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # uvicorn says when it listens: no polling of the port
            if b"Uvicorn running" in line:
                break
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and 'id="read-only"' in page.text
        write = httpx.post(f"http://127.0.0.1:{port}/api/actions", json={}, timeout=10)
        assert write.status_code == 405
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_state_key_holding_garbage_is_named_not_an_error(
    client: httpx.AsyncClient, queue: Queue, queue_name: str
) -> None:
    await queue.redis.set(QueueKeys(queue_name).dead, "planted")
    page = await client.get("/queue", params={"name": queue_name, "state": "dead"})
    assert page.status_code == 200 and 'id="page-problem"' in page.text
    listed = (await client.get("/api/jobs", params={"queue": queue_name, "state": "dead"})).json()
    assert listed["rows"] == [] and "another type" in listed["problem"]
    assert (await client.get("/")).status_code == 200
