"""Another revision's code, checked out beside this one for a before/after benchmark."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def checkout(revision: str) -> Iterator[str]:
    """A temporary git worktree of ``revision`` (its path), removed afterwards; ``""``
    (and nothing checked out) when ``revision`` is empty."""
    if not revision:
        yield ""
        return
    tree = tempfile.mkdtemp(prefix="aq-before-")
    subprocess.run(["git", "worktree", "add", "--detach", tree, revision], cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT,
                       capture_output=True)  # fmt: skip
