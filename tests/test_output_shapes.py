"""The machine-readable outputs are what docs/reference/ says they are.

``--json`` of every command is validated against the JSON Schemas on
docs/reference/cli-json.md (read from the page), and the JSON log lines against the
tables of docs/reference/log-events.md, all from real processes: a supervised worker
(``tests/shapes_app.py``) and the ``aioqueue`` commands, on a real Redis. The log tables
are also compared with every log call in the source, so an event or a field that appears
or disappears without the page saying so fails here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
import redis

from aioqueue import JobNotFound, Queue
from tests.log_catalog import COMMON, code_events, documented_events
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
CLI_PAGE = ROOT / "docs" / "reference" / "cli-json.md"
_SCHEMA = re.compile(
    r"<!--\s*schema:\s*(?P<name>[\w ]+?)\s*-->\s*\n```json\n(?P<body>.*?)^```", re.S | re.M
)
QUEUE = "shapes"
TARGET = "tests.shapes_app:worker"


def schemas() -> dict[str, dict[str, Any]]:
    found = {m["name"]: json.loads(m["body"]) for m in _SCHEMA.finditer(CLI_PAGE.read_text())}
    for schema in found.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    return found


class Run:
    """One short life of a supervised worker, with the commands run against it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.env = {
            **os.environ,
            "AIOQUEUE_REDIS_URL": url,
            "TEST_QUEUE": QUEUE,
            "PYTHONPATH": str(ROOT),
        }
        self.outputs: dict[str, list[Any]] = {}
        self.codes: dict[str, list[int]] = {}
        self.log: list[str] = []
        self._seen: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def saw(self, event: str) -> threading.Event:
        with self._lock:
            return self._seen.setdefault(event, threading.Event())

    def read_log(self, stream: Any) -> None:
        for line in stream:
            self.log.append(line)
            try:
                event = json.loads(line).get("event")
            except ValueError:
                continue
            self.saw(str(event)).set()

    def cli(self, name: str, *args: str, wait: bool = True) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aioqueue", *args, "--json"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if wait:
            self.collect(name, proc)
        return proc

    def collect(self, name: str, proc: subprocess.Popen[str], *, lines: bool = False) -> None:
        """lines: the command prints one JSON object per line (``events``), each an output."""
        out, err = proc.communicate(timeout=60)
        assert out.strip(), f"{name}: no output (exit {proc.returncode}): {err}"
        documents = [json.loads(line) for line in out.splitlines()] if lines else [json.loads(out)]
        self.outputs.setdefault(name, []).extend(documents)
        self.codes.setdefault(name, []).append(proc.returncode)


def _abort_when_running(url: str) -> None:
    """Aborts the ``nap`` job once it runs (read from the active set, which also holds the
    each-second cron jobs for a moment: under load one of those may be the first entry)."""

    async def napping(queue: Queue, client: redis.asyncio.Redis) -> str | None:
        for raw in await client.zrange(f"aq:{{{QUEUE}}}:active", 0, -1):
            job_id = raw.decode()
            with contextlib.suppress(JobNotFound):
                if ((await queue.job(job_id).info()).task or "").endswith(".nap"):
                    return job_id
        return None

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(url)
        try:
            async with Queue(url, name=QUEUE) as queue:
                with anyio.fail_after(30):
                    while (job_id := await napping(queue, client)) is None:
                        await anyio.sleep(0.02)  # no event tells another process a job started
                assert await queue.job(job_id).abort()
        finally:
            await client.aclose()

    anyio.run(main)


@pytest.fixture(scope="module")
def run(redis_server: RedisServer) -> Run:
    r = Run(redis_server.url)
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aioqueue",
            "--log-format",
            "json",
            "run",
            TARGET,
            "--processes",
            "1",
        ],
        env=r.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert supervisor.stderr is not None
    reader = threading.Thread(target=r.read_log, args=(supervisor.stderr,), daemon=True)
    reader.start()
    try:
        assert r.saw("worker.started").wait(60), "".join(r.log)
        q = ("--queue", QUEUE)
        r.cli("enqueue", "enqueue", "tests.shapes_app:add", "1", "2", *q)
        r.cli("enqueue", "enqueue", "tests.shapes_app:add", "2", "3", *q, "--wait")
        r.cli("enqueue", "enqueue", "tests.shapes_app:boom", "bad", *q, "--wait")
        r.cli("enqueue", "enqueue", "tests.shapes_app:once_more", *q, "--wait")
        late = ("--delay", "600", "--timeout", "0.2")
        r.cli("enqueue", "enqueue", "tests.shapes_app:add", "1", "2", *q, *late, "--wait")
        napping = r.cli(
            "enqueue", "enqueue", "tests.shapes_app:nap", "30", *q, "--wait", wait=False
        )
        _abort_when_running(r.url)
        r.collect("enqueue", napping)
        assert r.saw("cron.fired").wait(30)
        r.cli("info", "info", *q)
        r.cli("info", "info")  # every queue found by the key scan
        r.cli("check", "check", *q)
        r.cli("jobs failed", "jobs", "failed", *q)
        dead = r.outputs["jobs failed"][0]
        r.cli("jobs retry", "jobs", "retry", dead[0]["id"], *q)
        r.cli("jobs purge", "jobs", "purge", "--all", *q)
        r.collect("events", r.cli("events", "events", *q, "--from", "0", wait=False), lines=True)
        r.cli("cron", "cron", TARGET)
        r.cli("cron", "cron", TARGET, "--redis-url", "redis://127.0.0.1:1/0")  # nothing there
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=60)
        reader.join(timeout=10)
    assert code == 0, "".join(r.log)
    return r


def test_the_page_has_a_schema_for_every_command_with_json() -> None:
    from tests.test_reference import cli_commands

    with_json = {name for name, command in cli_commands().items() if _has_json(command)}
    assert set(schemas()) == with_json


def _has_json(command: Any) -> bool:
    return any("--json" in getattr(p, "opts", ()) for p in command.params)


def test_every_json_output_matches_its_documented_schema(run: Run) -> None:
    documented = schemas()
    assert set(run.outputs) == set(documented)
    for name, outputs in run.outputs.items():
        for output in outputs:
            errors = list(jsonschema.Draft202012Validator(documented[name]).iter_errors(output))
            assert not errors, f"{name}: {[e.message for e in errors]}\n{json.dumps(output)}"


def test_the_run_produced_each_form_it_documents(run: Run) -> None:
    # every form of --wait but "set aside" (a worker verifying signatures) and "missing"
    statuses = [o.get("status") for o in run.outputs["enqueue"]]
    assert statuses == [None, "complete", "failed", "failed", "scheduled", "aborted"]
    assert run.codes["enqueue"] == [0, 0, 1, 1, 1, 1]
    assert run.outputs["check"][0]["ok"] is True
    assert [c["redis_reachable"] for c in run.outputs["cron"]] == [True, False]
    assert run.outputs["jobs retry"] == [{"queue": QUEUE, "requeued": 1}]
    info = run.outputs["info"][0]["queues"][0]
    assert info["name"] == QUEUE and info["workers"] and info["stats"]["complete"] >= 1


def test_every_log_line_is_a_documented_event_with_documented_fields(run: Run) -> None:
    documented = documented_events()
    seen = set()
    for line in run.log:
        entry = json.loads(line)  # every line is one JSON object
        name = entry["event"]
        assert name in documented, f"undocumented log event {name}: {line}"
        assert entry["level"] in documented[name].levels, line
        extra = set(entry) - COMMON - documented[name].fields
        assert not extra, f"{name}: fields {extra} are not documented"
        seen.add(name)
    assert {
        "supervisor.started",
        "supervisor.child_started",
        "supervisor.child_ready",
        "worker.started",
        "job.completed",
        "job.retrying",
        "job.failed",
        "job.stopped",
        "cron.fired",
        "supervisor.signal",
        "worker.stopped",
        "supervisor.stopped",
    } <= seen, seen


def test_the_log_page_lists_exactly_the_events_the_code_logs() -> None:
    in_code, on_page = code_events(), documented_events()
    assert sorted(set(in_code) - set(on_page)) == [], "logged but not documented"
    assert sorted(set(on_page) - set(in_code)) == [], "documented but no longer logged"
    for name, event in in_code.items():
        page = on_page[name]
        assert event.levels == page.levels, (name, event.levels, page.levels, event.where)
        assert event.fields == page.fields, (name, event.fields, page.fields, event.where)


_METRIC_ROW = re.compile(r"^\|\s*`(aioqueue_[a-z_]+)`\s*\|", re.M)
_STREAM_FIELD = re.compile(r"^\|\s*`([a-z_]+)`\s*\|\s*(every entry|where known|`)", re.M)


def test_the_metrics_page_lists_exactly_the_metrics_the_module_declares() -> None:
    pytest.importorskip("aioqueue.prometheus", reason="aioqueue.prometheus has not landed yet")
    source = (ROOT / "aioqueue" / "prometheus.py").read_text()
    # the first string of every metric family made there is its name
    declared = set(
        re.findall(r"""(?:Counter|Gauge|Histogram|MetricFamily)\(\s*["'](aioqueue_\w+)""", source)
    )
    page = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    assert declared == set(_METRIC_ROW.findall(page))


def test_event_stream_entries_have_the_documented_fields(run: Run) -> None:
    from aioqueue._protocol.keys import QueueKeys

    if not hasattr(QueueKeys, "__slots__") or "events" not in QueueKeys.__slots__:
        pytest.skip("the event stream (issue #14) has not landed yet")
    page = (ROOT / "docs" / "reference" / "events.md").read_text()
    fields = {m[0] for m in _STREAM_FIELD.findall(page)}
    events = set(re.findall(r"^\|\s*`([a-z_]+)`\s*\|\s*(?!every|where)", page, re.M)) - fields
    client = redis.Redis.from_url(run.url)
    try:
        entries = client.xrange(QueueKeys(QUEUE).events)
    finally:
        client.close()
    assert entries, "the module's run left no entries in the stream"
    for _, entry in entries:
        got = {k.decode() for k in entry}
        assert got <= fields, got - fields
        assert {"event", "job", "task", "attempt", "ts"} <= got
        assert entry[b"event"].decode() in events
