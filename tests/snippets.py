"""Code blocks of the user's documents, run as written (``tests/test_snippets.py``).

Every ```` ```python ```` block of a covered document carries a marker, an HTML
comment on the line just above it (invisible in the rendered page)::

    <!-- snippet: file app/tasks.py -->       written to app/tasks.py of a scratch project
    <!-- snippet: run app/main.py expect=sent worker=app.tasks:worker -->
                                              written there too, then run as a script with
                                              the files above it in place; ``worker=``
                                              starts ``aioqueue run TARGET`` beside it,
                                              ``expect=`` must appear in its output
    <!-- snippet: skip needs a Redis Cluster --> not run, for the reason given
    <!-- snippet: fragment a piece of tasks.py --> a piece of a program shown in the
                                              prose, on purpose not run; a Python
                                              fragment must still parse (top-level
                                              ``await`` allowed)

The blocks of one document share one scratch project, in document order. A run
block's ``redis://localhost:6379/0`` (what a reader's own Redis would be) is
replaced by the test's Redis. Every block needs a marker, whatever its language,
except displays: ``text`` (command synopses, output), ``mermaid`` (diagrams) and
``json`` blocks under a ``<!-- schema: NAME -->`` marker (the schemas that
tests/test_output_shapes.py validates output against). An unmarked block is an
error: a page cannot gain code that no test runs without saying why.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(
    r"(?:<!--\s*(?P<what>snippet|schema):\s*(?P<marker>.*?)\s*-->\s*\n)?"
    r"```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)
DISPLAYS = {"text", "mermaid"}
DEFAULT_URLS = ("redis://localhost:6379/0", "redis://localhost:6379")


@dataclass
class Snippet:
    doc: str
    line: int
    lang: str
    code: str
    kind: str = ""  # file | run | skip | fragment | schema ("" when unmarked)
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def snippets(doc: Path) -> list[Snippet]:
    """The code blocks of ``doc`` with their markers, in order."""
    text = doc.read_text()
    out: list[Snippet] = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("lang")) + 1
        name = str(doc.relative_to(ROOT)) if doc.is_relative_to(ROOT) else str(doc)
        snip = Snippet(name, line, m["lang"], m["code"])
        marker = m["marker"]
        if m["what"] == "schema":
            snip.kind, snip.path = "schema", marker
        elif marker:
            kind, _, rest = marker.partition(" ")
            snip.kind = kind
            if kind in ("skip", "fragment"):
                snip.reason = rest.strip()
            else:
                words = shlex.split(rest)
                snip.path = words[0] if words else ""
                snip.options = dict(w.split("=", 1) for w in words[1:])
        out.append(snip)
    return out


def python_snippets(doc: Path) -> list[Snippet]:
    return [s for s in snippets(doc) if s.lang in ("python", "py")]


def check_markers(doc: Path) -> list[Snippet]:
    """Every block of ``doc`` is run, written, skipped or a fragment on purpose (or a
    display); Python fragments parse. Returns the blocks. Raises AssertionError."""
    found = snippets(doc)
    for snip in found:
        if snip.lang in DISPLAYS or (snip.kind == "schema" and snip.lang == "json"):
            continue
        assert snip.kind in ("file", "run", "skip", "fragment"), (
            f"{snip.where}: a ```{snip.lang or '(no language)'} block needs a"
            " `<!-- snippet: file|run|skip|fragment ... -->` marker (tests/snippets.py)"
        )
        if snip.kind in ("skip", "fragment"):
            assert snip.reason, f"{snip.where}: say why it is a {snip.kind}"
        if snip.kind == "fragment" and snip.lang in ("python", "py"):
            try:
                compile(
                    snip.code,
                    snip.where,
                    "exec",
                    ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST,
                )
            except SyntaxError as exc:
                raise AssertionError(f"{snip.where}: the fragment does not parse: {exc}") from None
    return found


def run_document(doc: Path, project: Path, redis_url: str, timeout: float = 60) -> list[str]:
    """Writes and runs the document's snippets in ``project``; the outputs of the runs.

    Raises AssertionError naming the snippet that failed.
    """
    env = {
        **os.environ,
        "AIOQUEUE_REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]),
        "AIOQUEUE_LOG_LEVEL": "warning",
    }
    outputs: list[str] = []
    check_markers(doc)
    for snip in python_snippets(doc):
        if snip.kind in ("skip", "fragment"):
            continue
        assert snip.path, f"{snip.where}: the marker names no file"
        target = project / snip.path
        target.parent.mkdir(parents=True, exist_ok=True)
        for parent in target.relative_to(project).parents:
            if str(parent) != ".":
                (project / parent / "__init__.py").touch()
        code = snip.code
        for url in DEFAULT_URLS:  # the reader's local Redis is the test's here
            code = code.replace(url, redis_url)
        target.write_text(code)
        if snip.kind == "run":
            outputs.append(_run(snip, project, env, timeout))
    return outputs


def _run(snip: Snippet, project: Path, env: dict[str, str], timeout: float) -> str:
    worker: subprocess.Popen[bytes] | None = None
    if "worker" in snip.options:
        command = [sys.executable, "-m", "aioqueue", "run", snip.options["worker"]]
        worker = subprocess.Popen(
            [*command, "--processes", "0"],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, snip.path],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{snip.where} exited {proc.returncode}:\n{out}"
        expect = snip.options.get("expect")
        assert expect is None or expect in proc.stdout, (
            f"{snip.where}: {expect!r} not in its output:\n{out}"
        )
        return f"{snip.where} ({time.monotonic() - started:.1f}s): {proc.stdout.strip()}"
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
