"""Placeholder until the supervisor work lands: runs one worker in-process."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    print("make demo: the full demo arrives with the supervisor work", file=sys.stderr)
