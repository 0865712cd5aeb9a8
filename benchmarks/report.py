"""Markdown table from a results file: ``python report.py results/<run>.jsonl [more.jsonl]``.

Each cell is the median over repetitions with min-max; ratios are aioqueue/peer,
computed repetition by repetition (same run, same Redis) and then the median.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

LIBS = ["aioqueue", "arq", "saq", "streaq", "taskiq"]
ROWS = [
    ("a_enqueue", "jobs/s", "(a) single awaited enqueue", "jobs/s"),
    ("a2_concurrent", "jobs/s", "(a2) awaited enqueue, 100 concurrent coroutines", "jobs/s"),
    ("a2/a", "ratio", "(a2)/(a) concurrency gain", "x"),
    ("b_bulk", "jobs/s", "(b) bulk enqueue", "jobs/s"),
    ("c_noop_1p", "jobs/s", "(c) no-op, 1 process, concurrency 100", "jobs/s"),
    ("d_noop_2p", "jobs/s", "(d) no-op, 2 processes", "jobs/s"),
    ("d/c", "ratio", "(d)/(c) scaling with 2 processes", "x"),
    ("e_sleep_c100", "jobs/s", "(e) sleep 10 ms, concurrency 100", "jobs/s"),
    ("e_sleep_c500", "jobs/s", "(e) sleep 10 ms, concurrency 500", "jobs/s"),
    ("f_latency", "enqueue→start p50", "(f) enqueue→start p50", "ms ↓"),
    ("f_latency", "enqueue→start p99", "(f) enqueue→start p99", "ms ↓"),
    ("f_latency", "enqueue→result p50", "(f) enqueue→result seen p50", "ms ↓"),
    ("f_latency", "enqueue→result p99", "(f) enqueue→result seen p99", "ms ↓"),
    ("g_cpu_1p", "jobs/s", "(g) CPU ~5 ms/job, 1 process", "jobs/s"),
    ("g_cpu_2p", "jobs/s", "(g) CPU ~5 ms/job, 2 processes", "jobs/s"),
    ("g2/g1", "ratio", "(g) 2 processes / 1 process", "x"),
    ("h_delayed", "lateness p50", "(h) delayed job lateness p50", "ms ↓"),
    ("h_delayed", "lateness p99", "(h) delayed job lateness p99", "ms ↓"),
    ("i_backlog", "jobs/s", "(i) no-op with a backlog queued", "jobs/s"),
    ("i/c", "ratio", "(i)/(c) backlog vs empty queue", "x"),
    ("j_memory", "bytes/job", "(j) Redis memory per queued job", "bytes ↓"),
]
DERIVED = {
    "d/c": ("d_noop_2p", "c_noop_1p"),
    "g2/g1": ("g_cpu_2p", "g_cpu_1p"),
    "a2/a": ("a2_concurrent", "a_enqueue"),
}


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(v: float) -> str:
    # a latency ratio of 0.004 must not print as 0.00
    return f"{v:.2g}" if v < 0.1 else fmt(v)


def cell(vals: list[float]) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(vals))}-{fmt(max(vals))})"


def load(paths: list[Path]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Header, footer and records of one run, or of runs merged in order: a run
    cut short and its remainder (their repetitions are numbered on)."""
    header: dict[str, Any] = {}
    footer: dict[str, Any] = {}
    data: list[dict[str, Any]] = []
    offset = 0
    for path in paths:
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        header = header or next((r for r in recs if r.get("kind") == "header"), {})
        footer = next((r for r in recs if r.get("kind") == "footer"), footer)
        reps = [int(r.get("rep", 0)) for r in recs if "lib" in r]
        for r in recs:
            if "lib" in r:
                data.append({**r, "rep": int(r.get("rep", 0)) + offset})
        offset += max(reps, default=-1) + 1
    if len(paths) > 1:
        header = {**header, "reps": f"{offset} (merged from {len(paths)} runs)"}
    return header, footer, data


def render(*paths: Path) -> str:
    header, footer, data = load(list(paths))
    path = paths[0]
    # (scenario, metric) -> lib -> rep -> [values]
    vals: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    na: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    errors: list[str] = []
    checks: dict[str, dict[str, object]] = defaultdict(
        lambda: {"missing": 0, "duplicates": 0, "waits_failed": 0, "loops": set(), "runner": set()}
    )
    versions: dict[str, str] = {}
    for r in data:
        lib, key = r["lib"], (r["scenario"], r["metric"])
        versions[lib] = r.get("version", "")
        if r.get("na"):
            na[key][lib] = r["na"]
        elif r.get("error"):
            errors.append(f"{lib} {r['scenario']} rep {r.get('rep')}: {r['error']}")
        elif r.get("value") is not None:
            vals[key][lib][r.get("rep", 0)].append(float(r["value"]))
        if r.get("errors"):
            errors.append(f"{lib} {r['scenario']} rep {r.get('rep')}: {r['errors']} calls failed")
        c = checks[lib]
        for k in ("missing", "duplicates", "waits_failed"):
            if isinstance(r.get(k), int) and not (
                r["scenario"] == "i_backlog" and k != "duplicates"
            ):
                c[k] = int(c[k]) + r[k]  # type: ignore[call-overload]
        c["loops"] |= set(r.get("loop") or [])  # type: ignore[operator]
        if r.get("runner"):
            c["runner"].add(r["runner"])  # type: ignore[attr-defined]
    for name, (num, den) in DERIVED.items():
        for lib, reps in vals[(num, "jobs/s")].items():
            for rep, vs in reps.items():
                base = vals[(den, "jobs/s")][lib].get(rep)
                if base:
                    vals[(name, "ratio")][lib][rep].append(vs[0] / base[0])
    for lib, reps in vals[("i_backlog", "jobs/s")].items():
        empty = [v for vs in vals[("c_noop_1p", "jobs/s")][lib].values() for v in vs]
        if empty:
            vals[("i/c", "ratio")][lib][0] = [
                v / statistics.median(empty) for vs in reps.values() for v in vs
            ]
    libs = [lib for lib in LIBS if lib in versions]
    peers = [lib for lib in libs if lib != "aioqueue"]
    notes: list[str] = []

    def na_cell(key: tuple[str, str], lib: str) -> str:
        reason = na[key].get(lib)
        if reason is None:
            return "-"
        if reason not in notes:
            notes.append(reason)
        return f"n/a[{notes.index(reason) + 1}]"

    kind = "quick" if header.get("quick") else "full"
    m = header.get("machine", {})
    out = [
        f"## Benchmark run {header.get('run', path.stem)} ({kind}, {header.get('reps')} rep.)",
        "",
        f"Measured on a shared machine ({m.get('cpus')} cores, {m.get('cpu')}; load average "
        f"{_load(m.get('loadavg'))} at start, {_load(footer.get('loadavg'))} at end; "
        f"Python {m.get('python')}, Redis {header.get('redis')} on loopback TCP): "
        "indicative only. Cells: median (min-max) over repetitions; ratios aioqueue/peer,"
        " per repetition, median. ↓ = lower is better.",
        "",
        "Versions: " + ", ".join(f"{lib} {versions[lib]}" for lib in libs) + ".",
        "",
        "| figure | unit | " + " | ".join(libs) + " | "
        + " | ".join(f"aq/{p}" for p in peers) + " |",
        "|---|---|" + "---|" * (len(libs) + len(peers)),
    ]  # fmt: skip
    for scenario, metric, label, unit in ROWS:
        key = (scenario, metric)
        row = [label, unit]
        for lib in libs:
            vs = [v for rep in vals[key][lib].values() for v in rep]
            row.append(cell(vs) if vs else na_cell(key, lib))
        for p in peers:
            ratios = []
            for rep, a in vals[key]["aioqueue"].items():
                b = vals[key][p].get(rep)
                if a and b and b[0]:
                    ratios.append(a[0] / b[0])
            if scenario in ("i/c",) or unit == "x":
                ratios = []  # a ratio of ratios says little
            row.append(f"{ratio(statistics.median(ratios))}x" if ratios else "")
        out.append("| " + " | ".join(row) + " |")
    out += ["", "Checks (all scenarios of the run): every job counted by its id."]
    out += [
        "",
        "| library | jobs missing | duplicates | waits failed | event loop | runner |",
    ]
    out += ["|---|---|---|---|---|---|"]
    for lib in libs:
        c = checks[lib]
        out.append(
            f"| {lib} | {c['missing']} | {c['duplicates']} | {c['waits_failed']} | "
            f"{', '.join(sorted(c['loops'])) or '?'} | {', '.join(sorted(c['runner']))} |"  # type: ignore[arg-type]
        )
    if notes:
        out += ["", "n/a:"] + [f"{i + 1}. {n}" for i, n in enumerate(notes)]
    if errors:
        out += ["", "Errors:"] + [f"- {e}" for e in errors]
    return "\n".join(out) + "\n"


def _load(v: object) -> str:
    return "/".join(f"{x:.1f}" for x in v) if isinstance(v, list | tuple) else "?"


if __name__ == "__main__":
    print(render(*(Path(a) for a in sys.argv[1:])))
