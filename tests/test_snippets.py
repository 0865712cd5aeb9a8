"""The documents' code runs as written (markers: see ``tests/snippets.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.snippets import ROOT, python_snippets, run_document

# documents whose every Python block is marked and run; the user guide joins them (#17)
DOCUMENTS = ["README.md"]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_python_block_runs_as_written(name: str, tmp_path: Path, redis_url: str) -> None:
    doc = ROOT / name
    assert python_snippets(doc), f"{name} has no python blocks"
    outputs = run_document(doc, tmp_path, redis_url)
    assert outputs, f"{name}: no block is run"
    print("\n".join(outputs))


def test_an_unmarked_block_is_refused(tmp_path: Path, redis_url: str) -> None:
    doc = tmp_path / "unmarked.md"
    doc.write_text("# x\n\n```python\nprint('hi')\n```\n")
    with pytest.raises(AssertionError, match="needs a"):
        run_document(doc, tmp_path / "project", redis_url)
