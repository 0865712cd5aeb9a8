"""Text that is safe to show on an operator's terminal.

Job ids, task names, error messages and results come from Redis, that is from
anyone who can write to it. Shown raw, an escape sequence in one can retitle or
clear the terminal, move the cursor to forge lines of a table, or hide text
behind a bidi override. ``printable`` shows every character that is not
printable (C0 and C1 controls, DEL, format characters such as bidi overrides
and zero-width ones, line separators, lone surrogates) as a Python escape.
"""

from __future__ import annotations

__all__ = ["printable"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, *, lines: bool = False) -> str:
    """``text`` with its unprintable characters escaped; ``lines`` keeps newlines
    and tabs (free text, not a table cell or a one-line message)."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():  # the common case: nothing to do
        return value
    keep = "\n\t" if lines else ""
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in value)
