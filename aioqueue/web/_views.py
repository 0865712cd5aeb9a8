"""How the dashboard shows what it reads: times, the hour chart (an SVG drawn
here, so the page needs no chart library), and the JSON of each record."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import msgspec

from aioqueue._admin.detail import JobDetail
from aioqueue._admin.stats import Minute
from aioqueue.admin import QueueInfo
from aioqueue.web._dashboard import QueueView

__all__ = ["ago", "chart", "detail_json", "duration", "encode", "queue_json", "ts"]

CHART_W, CHART_H = 400, 90


def ts(ms: int | None) -> str:
    """A Redis-clock ms time as UTC text ('-' when unknown)."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 1:
        return f"{ms:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def ago(ms: int | None, now_ms: int) -> str:
    return "-" if ms is None else f"{duration(max(0, now_ms - ms))} ago"


def chart(minutes: list[Minute]) -> dict[str, Any]:
    """Polyline points of jobs finished per minute (scaled to the busiest minute)
    and of the failure rate (0-100 %), over the width of the chart."""
    if not minutes:
        return {"throughput": "", "failures": "", "peak": 0, "width": CHART_W, "height": CHART_H}
    peak = max(m.finished for m in minutes) or 1
    step = CHART_W / max(1, len(minutes) - 1)
    top = 8

    def y(fraction: float) -> float:
        return round(CHART_H - fraction * (CHART_H - top), 1)

    throughput = " ".join(
        f"{round(i * step, 1)},{y(m.finished / peak)}" for i, m in enumerate(minutes)
    )
    failures = " ".join(f"{round(i * step, 1)},{y(m.failure_rate)}" for i, m in enumerate(minutes))
    ended = sum(m.complete + m.failed + m.retried + m.aborted for m in minutes)
    failed = sum(m.failed + m.retried for m in minutes)
    return {
        "throughput": throughput,
        "failures": failures,
        "peak": peak if peak > 1 or any(m.finished for m in minutes) else 0,
        "finished": sum(m.finished for m in minutes),
        "failure_rate": failed / ended if ended else 0.0,
        "width": CHART_W,
        "height": CHART_H,
    }


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def info_json(info: QueueInfo) -> dict[str, Any]:
    out = asdict(info)
    out["workers_alive"] = info.workers_alive
    return out


def queue_json(view: QueueView) -> dict[str, Any]:
    out = info_json(view.info)
    out["latency_ms"] = view.latency_ms
    out["minutes"] = [
        {**asdict(m), "finished": m.finished, "failure_rate": round(m.failure_rate, 4)}
        for m in view.minutes
    ]
    return out


def detail_json(job: JobDetail) -> dict[str, Any]:
    out = asdict(job)
    error = job.error
    out["error"] = (
        None
        if error is None
        else {
            "type": error.type,
            "message": error.message,
            "traceback": error.traceback,
            "timed_out": error.timed_out,
        }
    )
    out["can_retry"] = job.can_retry
    out["can_abort"] = job.can_abort
    out["can_delete"] = job.can_delete
    return out
