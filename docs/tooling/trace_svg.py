"""Draws finished OpenTelemetry spans as an SVG timeline, the way a trace viewer shows
them: one block per trace, one row per span (indented under its parent), a bar on a
time axis shared by all traces, and a dashed line for each span link.

Used by ``record_trace.py`` (the picture of docs/tracing.md); it reads only what the
SDK's ``ReadableSpan`` gives, so any recorded spans can be drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

WIDTH = 1180
LABEL_W = 330  # the name column
ROW_H = 30
HEAD_H = 26
PAD = 16
COLOURS = {
    SpanKind.SERVER: "#7a869a",
    SpanKind.PRODUCER: "#3572b0",
    SpanKind.CONSUMER: "#2e8b57",
    SpanKind.CLIENT: "#d9822b",
    SpanKind.INTERNAL: "#8c6bb1",
}
ERROR = "#c0392b"


def _ms(ns: int) -> float:
    return ns / 1e6


def _order(spans: Sequence[ReadableSpan]) -> list[tuple[int, list[tuple[int, ReadableSpan]]]]:
    """Traces in the order they began; in each, spans depth-first (children by start)."""
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    ids = {s.context.span_id for s in spans}
    out = []
    for trace_id, members in sorted(by_trace.items(), key=lambda kv: min(_start(s) for s in kv[1])):
        children: dict[int | None, list[ReadableSpan]] = {}
        for span in members:
            parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
            children.setdefault(parent, []).append(span)
        rows: list[tuple[int, ReadableSpan]] = []
        _walk(children, None, 0, rows)
        out.append((trace_id, rows))
    return out


def _walk(
    children: dict[int | None, list[ReadableSpan]],
    parent: int | None,
    depth: int,
    rows: list[tuple[int, ReadableSpan]],
) -> None:
    for child in sorted(children.get(parent, []), key=_start):
        rows.append((depth, child))
        _walk(children, child.context.span_id, depth + 1, rows)


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def _end(span: ReadableSpan) -> int:
    return span.end_time or _start(span)


def _detail(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    bits = [span.kind.name]
    if "aioqueue.job.attempt" in attrs:
        bits.append(f"attempt {attrs['aioqueue.job.attempt']}")
    if "aioqueue.job.outcome" in attrs:
        bits.append(str(attrs["aioqueue.job.outcome"]))
    if "error.type" in attrs:
        bits.append(f"error.type={attrs['error.type']}")
    return " · ".join(bits)


def render(spans: Sequence[ReadableSpan], title: str) -> str:
    """The SVG document (a string) of ``spans``."""
    traces = _order(spans)
    t0 = min(_start(s) for s in spans)
    t1 = max(_end(s) for s in spans)
    scale = (WIDTH - LABEL_W - 2 * PAD - 70) / max(t1 - t0, 1)  # 70: the last bar's label

    def x(ns: int) -> float:
        return LABEL_W + PAD + (ns - t0) * scale

    rows_total = sum(len(rows) for _, rows in traces)
    height = 70 + len(traces) * (HEAD_H + 8) + rows_total * ROW_H + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{PAD}" y="28" font-size="17" font-weight="bold">{escape(title)}</text>',
    ]
    # the time axis: ticks every round number of milliseconds
    span_ms = _ms(t1 - t0)
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if span_ms / s <= 10)
    tick = 0.0
    while tick <= span_ms + 1e-9:
        tx = x(t0 + int(tick * 1e6))
        out.append(f'<line x1="{tx:.1f}" y1="44" x2="{tx:.1f}" y2="{height - 30}" stroke="#eee"/>')
        out.append(
            f'<text x="{tx:.1f}" y="{height - 14}" font-size="11" fill="#666" '
            f'text-anchor="middle">{tick:g} ms</text>'
        )
        tick += step
    y = 52
    where: dict[int, tuple[float, float, float]] = {}  # span id -> bar (x0, x1, mid y)
    for trace_id, rows in traces:
        out.append(
            f'<rect x="{PAD / 2}" y="{y}" width="{WIDTH - PAD}" height="{HEAD_H}" '
            f'fill="#f4f5f7" rx="4"/>'
        )
        out.append(
            f'<text x="{PAD}" y="{y + 17}" font-size="12" fill="#333">trace '
            f'<tspan font-family="DejaVu Sans Mono, monospace">{trace_id:032x}</tspan>'
            f"</text>"
        )
        y += HEAD_H + 8
        for depth, span in rows:
            error = span.status.status_code is StatusCode.ERROR
            colour = ERROR if error else COLOURS.get(span.kind, "#888")
            x0, x1 = x(_start(span)), max(x(_end(span)), x(_start(span)) + 3)
            mid = y + ROW_H / 2 - 2
            where[span.context.span_id] = (x0, x1, mid)
            out.append(
                f'<text x="{PAD + depth * 16}" y="{mid - 1}" font-size="13" '
                f'font-weight="bold" fill="#222">{escape(span.name)}</text>'
            )
            out.append(
                f'<text x="{PAD + depth * 16}" y="{mid + 11}" font-size="10" '
                f'fill="#666">{escape(_detail(span))}</text>'
            )
            out.append(
                f'<rect x="{x0:.1f}" y="{mid - 8}" width="{x1 - x0:.1f}" height="14" '
                f'rx="2" fill="{colour}"/>'
            )
            label = f"{_ms(_end(span) - _start(span)):.2f} ms"
            out.append(
                f'<text x="{x1 + 4:.1f}" y="{mid + 3}" font-size="10" fill="#444">{label}</text>'
            )
            y += ROW_H
        y += 8
    # links last, over the bars: from the linked span to the span that links to it
    for span in spans:
        for link in span.links:
            if link.context.span_id not in where or span.context.span_id not in where:
                continue
            fx0, _, fy = where[link.context.span_id]
            tx0, _, ty = where[span.context.span_id]
            out.append(
                f'<path d="M {fx0 + 2:.1f} {fy + 6:.1f} C {fx0 + 2:.1f} {ty:.1f}, '
                f'{tx0 - 30:.1f} {ty:.1f}, {tx0:.1f} {ty:.1f}" fill="none" '
                f'stroke="#555" stroke-width="1.2" stroke-dasharray="4 3" '
                f'marker-end="url(#arrow)"/>'
            )
    out.insert(
        3,
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    )
    legend_x = WIDTH - 520
    for i, (name, colour) in enumerate(
        [
            ("SERVER", COLOURS[SpanKind.SERVER]),
            ("PRODUCER", COLOURS[SpanKind.PRODUCER]),
            ("CONSUMER", COLOURS[SpanKind.CONSUMER]),
            ("CLIENT", COLOURS[SpanKind.CLIENT]),
            ("error", ERROR),
        ]
    ):
        lx = legend_x + i * 100
        out.append(f'<rect x="{lx}" y="16" width="12" height="12" fill="{colour}" rx="2"/>')
        out.append(f'<text x="{lx + 16}" y="26" font-size="11" fill="#333">{name}</text>')
    out.append(
        f'<text x="{PAD}" y="{height - 14}" font-size="11" fill="#666">'
        "dashed: span link (creation context)</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
