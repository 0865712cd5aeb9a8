"""What the ``aioqueue`` commands print: tables, JSON and one-line errors.

Everything meant for a person goes through ``printable`` (see
``aioqueue._text``): ids, names and messages read from Redis cannot drive
the terminal. ``--json`` output is exact: JSON escapes control characters itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from aioqueue._text import printable


class Failed(click.ClickException):
    """A one-line error for the user, never a traceback (exit 2)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"aioqueue: {printable(self.format_message())}", err=True)


class No(Failed):
    """The answer is no (exit 1): printed as one line."""

    exit_code = 1


def echo(text: object, *, lines: bool = False) -> None:
    click.echo(printable(text, lines=lines))


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=jsonable))


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return repr(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Aligned columns; a cell that is None (unreadable) shows as '?'."""
    cells = [
        [str(h) for h in headers],
        *[["?" if c is None else printable(c) for c in row] for row in rows],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def problems_found(problems: Sequence[str]) -> Failed:
    """The one-line error for garbage met while reading (what could be read was shown)."""
    more = f" (and {len(problems) - 1} more; --json shows them)" if len(problems) > 1 else ""
    entries = "entry" if len(problems) == 1 else "entries"
    return Failed(f"{len(problems)} unreadable {entries}, the rest shown: {problems[0]}{more}")
