"""The documents' code runs as written (markers: see ``tests/snippets.py``).

Every page of docs/ found when the test runs is covered, and the README: each block is
run, written into a scratch project, or marked as a fragment on purpose.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.snippets import ROOT, check_markers, python_snippets, run_document

DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_block_runs_or_is_marked(name: str, tmp_path: Path, redis_url: str) -> None:
    doc = ROOT / name
    if not any(s.kind == "run" for s in python_snippets(doc)):
        check_markers(doc)  # nothing to run: the markers alone
        return
    outputs = run_document(doc, tmp_path, redis_url)
    print("\n".join(outputs))


def test_the_readme_runs_its_quickstart(tmp_path: Path, redis_url: str) -> None:
    assert run_document(ROOT / "README.md", tmp_path, redis_url), "README.md: no block is run"


def test_an_unmarked_block_is_refused(tmp_path: Path, redis_url: str) -> None:
    doc = tmp_path / "unmarked.md"
    doc.write_text("# x\n\n```python\nprint('hi')\n```\n")
    with pytest.raises(AssertionError, match="needs a"):
        run_document(doc, tmp_path / "project", redis_url)


def test_an_unmarked_shell_block_is_refused_and_a_fragment_must_parse(tmp_path: Path) -> None:
    doc = tmp_path / "unmarked.md"
    doc.write_text("# x\n\n```sh\nls\n```\n")
    with pytest.raises(AssertionError, match="needs a"):
        check_markers(doc)
    doc.write_text("# x\n\n<!-- snippet: fragment a piece -->\n```python\ndef (:\n```\n")
    with pytest.raises(AssertionError, match="does not parse"):
        check_markers(doc)
    doc.write_text("# x\n\n<!-- snippet: fragment a piece -->\n```python\nawait job\n```\n")
    check_markers(doc)
