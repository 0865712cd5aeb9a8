"""The dashboard in a real browser: Playwright driving Debian's chromium (headless,
one browser for the module) against the dashboard served by uvicorn, mounted
under /prefix (and a read-only one under /ro) of a host Starlette app, on a real
Redis. Waits are Playwright's: for an element or an attribute, never a sleep.

AIOQUEUE_SCREENSHOTS=1 saves a screenshot of each page into docs/images/.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect
from starlette.applications import Starlette
from starlette.routing import Mount

from aioqueue import JobFailed, Queue, Worker
from aioqueue._protocol.keys import QueueKeys
from aioqueue.cron import every
from aioqueue.web import create_app
from tests.conftest import ROOT
from tests.redis_server import RedisServer
from tests.tasks import add, boom, sleepy
from tests.web_helpers import emit

pytestmark = pytest.mark.anyio

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "docs" / "images"
LIVE = 1000  # ms: how soon a change must show without a reload


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
async def site(redis_server: RedisServer) -> AsyncIterator[str]:
    """The host app on a socket bound before it serves (no wait for it to start)."""
    host = Starlette(
        routes=[
            Mount("/prefix", app=create_app(redis_server.url)),
            Mount("/ro", app=create_app(redis_server.url, read_only=True)),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    server = uvicorn.Server(uvicorn.Config(host, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await serving


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on(
        "console", lambda m: errors.append(m.text) if m.type == "error" else None
    )  # a CSP violation is a console error
    yield opened
    await context.close()
    assert errors == []


async def shoot(page: Page, name: str) -> None:
    if os.environ.get("AIOQUEUE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"dashboard-{name}.png"), full_page=True)


async def live(page: Page) -> None:
    """The page's event stream is subscribed (its `ready` event came)."""
    await expect(page.locator("body")).to_have_attribute("data-live-state", "on")


async def dead_job(queue: Queue, redis_url: str, queue_name: str) -> str:
    job = await queue.enqueue(boom, "it <i>broke</i>")
    await Worker([boom], redis_url=redis_url, queues=[queue_name], burst=True).run()
    return job.id


def job_url(site: str, mount: str, queue: str, job_id: str) -> str:
    from urllib.parse import urlencode

    return f"{site}{mount}/job?{urlencode({'queue': queue, 'id': job_id})}"


async def test_a_job_enqueued_while_the_page_is_open_appears_without_reload(
    page: Page, site: str, queue: Queue, queue_name: str
) -> None:
    await page.goto(f"{site}/prefix/queue?name={queue_name}")
    await live(page)
    await page.evaluate("window.notReloaded = true")
    job = await queue.enqueue(add, 1, 2)  # its `enqueued` event reaches the page
    row = page.locator(f'#rows tr[data-job="{job.id}"]')
    await expect(row).to_be_visible(timeout=LIVE)
    await expect(row.locator("a")).to_have_attribute(
        "href", f"/prefix/job?queue={queue_name}&id={job.id}"
    )
    assert await page.evaluate("window.notReloaded") is True


async def test_retry_and_abort_buttons_change_the_job_in_redis(
    page: Page, site: str, queue: Queue, redis_url: str, queue_name: str
) -> None:
    keys = QueueKeys(queue_name)
    dead = await dead_job(queue, redis_url, queue_name)
    await page.goto(job_url(site, "/prefix", queue_name, dead))
    await expect(page.locator("#job-error")).to_contain_text("it <i>broke</i>")
    await shoot(page, "job")
    async with page.expect_navigation():
        await page.click('button[data-action="retry"]')
    assert await queue.redis.hget(keys.job(dead), "s") == b"queued"
    await expect(page.locator("#flash")).to_have_text("retry: 1 job")
    await expect(page.locator("#job-status")).to_have_text("queued")
    # the same job, queued again: abort it
    async with page.expect_navigation():
        await page.click('button[data-action="abort"]')
    assert await queue.redis.hget(keys.job(dead), "s") == b"aborted"
    await expect(page.locator("#job-status")).to_have_text("aborted")


async def test_bulk_retry_of_the_dead_jobs_is_confirmed_first(
    page: Page, site: str, queue: Queue, redis_url: str, queue_name: str
) -> None:
    for _ in range(3):
        await queue.enqueue(boom, "again")
    await Worker([boom], redis_url=redis_url, queues=[queue_name], burst=True).run()
    await page.goto(f"{site}/prefix/queue?name={queue_name}&state=dead")
    await expect(page.locator("#rows tr")).to_have_count(3)
    await shoot(page, "queue")
    await page.check("[data-select-all]")
    await page.click('button[data-action="retry-selected"]')
    await expect(page.locator("#confirm-text")).to_contain_text("3 jobs")
    assert await queue.redis.zcard(QueueKeys(queue_name).dead) == 3
    async with page.expect_navigation():
        await page.click("#confirm")
    assert await queue.redis.zcard(QueueKeys(queue_name).dead) == 0
    assert await queue.redis.llen(QueueKeys(queue_name).ready) == 3


async def test_read_only_shows_no_buttons_and_the_api_answers_405(
    page: Page, site: str, queue: Queue, redis_url: str, queue_name: str
) -> None:
    dead = await dead_job(queue, redis_url, queue_name)
    await page.goto(job_url(site, "/ro", queue_name, dead))
    await expect(page.locator("#read-only")).to_be_visible()
    await expect(page.locator("#job-id")).to_have_text(dead)
    assert await page.locator("button").count() == 0
    await page.goto(f"{site}/ro/queue?name={queue_name}&state=dead")
    await expect(page.locator(f'#rows tr[data-job="{dead}"]')).to_be_visible()
    assert await page.locator('form[method="post"], input[name="job"]').count() == 0
    answer = await page.request.post(
        f"{site}/ro/api/actions", data={"queue": queue_name, "action": "retry", "all": True}
    )
    assert answer.status == 405
    assert await queue.redis.hget(QueueKeys(queue_name).job(dead), "s") == b"failed"


async def test_under_a_prefix_every_link_and_the_event_stream_work(
    page: Page, site: str, queue: Queue, redis_url: str, queue_name: str
) -> None:
    dead = await dead_job(queue, redis_url, queue_name)
    checked: set[str] = set()
    for start in (
        "/prefix/",
        f"/prefix/queue?name={queue_name}&state=dead",
        job_url("", "/prefix", queue_name, dead),
    ):
        await page.goto(site + start)
        targets: list[str] = await page.evaluate(
            """() => [
              ...[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
              ...[...document.querySelectorAll('script[src]')].map(s => s.getAttribute('src')),
              ...[...document.querySelectorAll('link[rel=stylesheet]')]
                .map(l => l.getAttribute('href')),
              ...[...document.querySelectorAll('form')].map(f => f.getAttribute('action')),
              document.body.dataset.live,
            ]"""
        )
        forms: list[str] = await page.evaluate(
            "() => [...document.querySelectorAll('form')].map(f => f.getAttribute('action'))"
        )
        for target in targets:
            assert target.startswith("/prefix/"), (start, target)
            # forms and the event stream are used below and in the other tests
            if target in checked or target in forms or urlsplit(target).path == "/prefix/events":
                continue
            if ("name=" in target or "queue=" in target) and queue_name not in target:
                continue  # another test's queue (some hold garbage on purpose)
            checked.add(target)
            answer = await page.request.get(site + target)
            assert answer.status == 200, target
    assert len(checked) >= 8
    await page.goto(f"{site}/prefix/")
    await live(page)  # the stream answered under the prefix
    other = await queue.enqueue(add, 5, 5)
    await expect(page.locator(f'#feed li[data-job="{other.id}"]')).to_be_visible(timeout=LIVE)


async def test_a_job_id_holding_markup_renders_as_text(
    page: Page, site: str, queue: Queue, queue_name: str
) -> None:
    nasty = "<script>window.pwned=1</script><img/src=x/onerror=window.pwned=2>"
    await page.goto(f"{site}/prefix/queue?name={queue_name}")
    await live(page)
    await queue.enqueue(add.options(job_id=nasty), 1, 1)
    # and an event no worker writes: a task name holding markup
    await emit(queue.redis, queue_name, "enqueued", nasty, "<b>task</b>")
    row = page.locator("#rows tr").first
    await expect(row.locator("a")).to_have_text(nasty, timeout=LIVE)  # the live row
    await page.reload()
    await expect(page.locator("#rows tr").first.locator("a")).to_have_text(nasty)
    await page.goto(job_url(site, "/prefix", queue_name, nasty))
    await expect(page.locator("#job-id")).to_have_text(nasty)
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("img").count() == 0


async def test_every_page_shows_what_a_running_worker_does(
    page: Page, site: str, queue: Queue, redis_url: str, queue_name: str
) -> None:
    worker = Worker(
        [add, boom, sleepy],
        redis_url=redis_url,
        queues=[queue_name],
        grace=0.1,
        cron=[every(300, add.call(2, 3), name=f"report-{queue_name}")],
    )
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        for job in [await queue.enqueue(add, i, i) for i in range(20)]:
            await job.result(timeout=10)
        for job in [await queue.enqueue(boom, f"bad input {i}") for i in range(3)]:
            with pytest.raises(JobFailed):
                await job.result(timeout=10)
        await queue.enqueue(sleepy, 30)
        await page.goto(f"{site}/prefix/")
        row = page.locator(f'#queues tr[data-queue="{queue_name}"]')
        await expect(row.locator('[data-stat="failed"]')).to_have_text("3")
        await expect(page.locator("figure.chart").first).to_be_visible()
        await shoot(page, "overview")
        await page.goto(f"{site}/prefix/workers")
        await expect(page.locator(f'tr[data-worker="{worker.id}"]')).to_contain_text("alive")
        await shoot(page, "workers")
        await page.goto(f"{site}/prefix/cron")
        await expect(page.locator(f'tr[data-cron="report-{queue_name}"]')).to_contain_text(
            "every 300s"
        )
        await shoot(page, "cron")
        worker.stop()
