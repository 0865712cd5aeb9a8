"""Prints the lowest version of each dependency that pyproject.toml allows, one
requirement a line (``name>=X`` becomes ``name==X``), for ``make test-floor``:
so the floor that job tests is always the one the package declares."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def floor_pins() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        pinned, n = re.subn(r">=\s*([^,;\s]+)", r"==\1", requirement)
        if n != 1 or "<" in pinned:
            raise SystemExit(f"no single lower bound to pin in {requirement!r}")
        pins.append(pinned)
    return pins


if __name__ == "__main__":
    sys.stdout.write("".join(f"{pin}\n" for pin in floor_pins()))
