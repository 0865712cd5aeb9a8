"""docs/testing.md runs as written: its files are written into a scratch project
and its tests run there with pytest, the plugin enabled as the page says.

Every python block of the page carries ``<!-- snippet: file PATH -->`` on the
line above it (the marker the other pages' snippets use); an unmarked block
fails this test, so the page cannot gain code that nothing runs. A block
without a marker that is not Python (a shell line, a fragment in a sentence)
is not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "testing.md"
_BLOCK = re.compile(
    r"(?:<!--\s*snippet:\s*(?P<marker>.*?)\s*-->\s*\n)?```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)


def files_of(page: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for m in _BLOCK.finditer(page.read_text()):
        marker = m["marker"]
        if marker is None:
            # fragments shown inside the prose, not files: they may not define anything
            assert m["lang"] != "python" or "def " not in m["code"], m["code"]
            continue
        kind, _, path = marker.partition(" ")
        if kind == "fragment":  # a piece shown in the prose (tests/snippets.py checks it parses)
            continue
        assert kind == "file" and path, f"unknown snippet marker {marker!r}"
        files[path.strip()] = m["code"]
    return files


def test_the_testing_page_runs_as_written(tmp_path: Path) -> None:
    files = files_of(PAGE)
    assert {"tests/conftest.py", "app/tasks.py", "app/web.py"} <= set(files)
    for path, code in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / "__init__.py").touch()
        target.write_text(code)
    tests = sum(code.count("\nasync def test_") for code in files.values())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(rf"\b{tests} passed\b", out), out
