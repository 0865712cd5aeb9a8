"""The structured log events the code can emit, read from its source (``ast``), and the
catalogue docs/reference/log-events.md documents, read from its tables.

A log call is ``log.<level>("event.name", field=..., ...)`` on a structlog logger named
``log``. Two forms are followed further: an event name held in a variable (its
assignment's string constants are the names it can take) and ``**fields`` passed on from
the enclosing function (its callers' extra keyword arguments are the fields).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "log-events.md"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
# what every line carries (aioqueue.logging.configure); `exception` with a traceback
# on the lines of log.exception(...)
COMMON = {"event", "level", "timestamp"}


@dataclass
class Event:
    name: str
    levels: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)
    where: set[str] = field(default_factory=set)


def _constants(node: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def code_events(package: Path = ROOT / "aioqueue") -> dict[str, Event]:
    events: dict[str, Event] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
                and node.args
            ):
                continue
            function = node
            while function in parents and not isinstance(
                function, ast.FunctionDef | ast.AsyncFunctionDef
            ):
                function = parents[function]
            names = _names(node.args[0], function)
            fields = {k.arg for k in node.keywords if k.arg is not None}
            if any(k.arg is None for k in node.keywords) and isinstance(
                function, ast.FunctionDef | ast.AsyncFunctionDef
            ):
                fields |= _passed_on(tree, function)
            level = "error" if node.func.attr == "exception" else node.func.attr
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for name in names:
                event = events.setdefault(name, Event(name))
                event.levels.add(level)
                event.fields |= fields
                if node.func.attr == "exception":
                    event.fields.add("exception")
                event.where.add(where)
    return events


def _names(arg: ast.expr, function: ast.AST) -> list[str]:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    assert isinstance(arg, ast.Name), f"a log event named by {ast.dump(arg)}"
    found = [
        value
        for node in ast.walk(function)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == arg.id for t in node.targets)
        for value in _constants(node.value)
    ]
    assert found, f"no string assigned to {arg.id}"
    return found


def _passed_on(tree: ast.Module, function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    declared = {a.arg for a in function.args.args + function.args.kwonlyargs}
    extra: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", None)
            )
            if callee == function.name:
                extra |= {k.arg for k in node.keywords if k.arg and k.arg not in declared}
    return extra


_ROW = re.compile(r"^\|\s*`(?P<name>[a-z_]+\.[a-z_]+)`\s*\|(?P<level>[^|]*)\|(?P<fields>[^|]*)\|")


def documented_events(page: Path = PAGE) -> dict[str, Event]:
    """The rows of the page's tables: | `name` | level[, level] | `field`, `field` | ... |"""
    events: dict[str, Event] = {}
    for line in page.read_text().splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        assert m["name"] not in events, f"{m['name']} documented twice"
        levels = {w.strip() for w in m["level"].split(",") if w.strip()}
        fields = set(re.findall(r"`([a-z_]+)`", m["fields"]))
        events[m["name"]] = Event(m["name"], levels, fields)
    return events


if __name__ == "__main__":  # a draft of the tables, for whoever adds events
    by_prefix: dict[str, list[Event]] = defaultdict(list)
    for e in code_events().values():
        by_prefix[e.name.split(".")[0]].append(e)
    for prefix, group in sorted(by_prefix.items()):
        print(f"\n## {prefix}\n\n| event | level | fields | when |\n|---|---|---|---|")
        for e in sorted(group, key=lambda e: e.name):
            fields = ", ".join(f"`{f}`" for f in sorted(e.fields))
            print(
                f"| `{e.name}` | {', '.join(sorted(e.levels))} | {fields} | {sorted(e.where)[0]} |"
            )
