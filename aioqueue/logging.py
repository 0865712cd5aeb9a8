"""structlog set-up for the CLI. Library code only calls ``structlog.get_logger()``."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from aioqueue._text import printable


class _Quoted:
    """A value the console renderer shows as ``repr`` of the text: quoted and escaped."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)


def _printable_values(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Console lines show job ids, task names and error messages read from Redis:
    none of them may drive the terminal (JSON lines escape control characters anyway).
    The renderer shows the event and the traceback as they are, other strings
    sometimes quoted (repr) and sometimes not: each gets escaped exactly once."""
    for key, value in event.items():
        if not isinstance(value, str) or value.isprintable():
            continue
        if key in ("event", "exception"):
            event[key] = printable(value, lines=key == "exception")
        else:
            event[key] = _Quoted(value)
    return event


def add_trace_ids(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: ``trace_id`` and ``span_id`` (hex, as trace viewers show
    them) of the OpenTelemetry span active where the event is logged, when there is one.

    ``configure`` puts it in; an app with its own structlog set-up adds it to its
    processors. It never imports OpenTelemetry: a span can be active only in a process
    that imported it, so until then each event costs one dict lookup.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return event
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event.setdefault("trace_id", format(span.trace_id, "032x"))
        event.setdefault("span_id", format(span.span_id, "016x"))
    return event


def configure(*, fmt: str = "console", level: str = "info") -> None:
    """JSON lines (``fmt='json'``) for production, coloured lines for a terminal."""
    last: list[structlog.types.Processor]
    if fmt == "json":
        last = [structlog.processors.JSONRenderer()]
    else:
        last = [_printable_values, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *last,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # one write() per line: a supervisor and its children share stderr, and print()
        # writes the text and its newline apart, so their lines could run together
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
