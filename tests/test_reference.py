"""The reference pages cover the public surface: every name of ``aioqueue.__all__``,
every public module (``PUBLIC_MODULES`` of tests/test_exported_members.py, so a module
made public there needs its page here), every command of the click tree and its options,
each with a docstring that says something.

The API pages are ``docs/reference/api/<module>.md``, one per public module, built by
mkdocstrings from ``::: <dotted path>`` lines; ``make docs`` renders them.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import click
import griffe
import pytest

import aioqueue
from tests.test_exported_members import PUBLIC_MODULES

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "reference" / "api"
_DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)\s*$", re.M)


def cli_commands() -> dict[str, click.Command]:
    """Every command of ``aioqueue``, by its path ("run", "jobs failed", ...)."""
    from aioqueue._cli.main import cli

    found: dict[str, click.Command] = {}

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        elif not command.hidden:
            found[" ".join(path)] = command

    walk(cli, [])
    return found


def page_of(module: str) -> Path:
    return API / ("aioqueue.md" if module == "aioqueue" else f"{module.split('.')[-1]}.md")


def directives() -> list[str]:
    return [
        m["path"]
        for page in sorted(API.glob("*.md"))
        for m in _DIRECTIVE.finditer(page.read_text())
    ]


def test_every_public_module_has_its_page_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for module in sorted(PUBLIC_MODULES | {"aioqueue"}):
        page = page_of(module)
        assert page.exists(), f"{module} has no reference page: add {page.relative_to(ROOT)}"
        text = page.read_text()
        assert module == "aioqueue" or f"::: {module}\n" in text, f"{page.name}: no `::: {module}`"
        assert str(page.relative_to(ROOT / "docs")) in nav, (
            f"{page.name} is not in mkdocs.yml's nav"
        )


def test_every_name_of_all_is_documented() -> None:
    shown = directives()
    modules = [importlib.import_module(p) for p in shown if p in PUBLIC_MODULES]
    for name in aioqueue.__all__:
        if name == "__version__":
            continue
        value = getattr(aioqueue, name)
        if f"aioqueue.{name}" in shown:
            continue
        homes = [
            m.__name__ for m in modules if getattr(m, name, None) is value and name in m.__all__
        ]
        assert homes, f"aioqueue.{name} is on no reference page"


def _sections(doc: griffe.Docstring | None) -> set[str]:
    """Names documented in a docstring's Args/Attributes/Parameters sections."""
    if doc is None:
        return set()
    names: set[str] = set()
    for section in doc.parse("google"):
        if section.kind.value in ("parameters", "attributes", "other parameters"):
            names |= {item.name for item in section.value}
    return names


def _undocumented(obj: Any, out: list[str]) -> None:
    obj = obj.final_target if obj.is_alias else obj
    if not (obj.docstring and obj.docstring.value.strip()):
        out.append(obj.path)
    if not (obj.is_module or obj.is_class):
        return
    named = _sections(obj.docstring) if obj.is_class else set()
    for name, member in obj.members.items():
        if name.startswith("_") or (obj.is_module and not member.is_public):
            continue
        target = member.final_target if member.is_alias else member
        if target.is_attribute and (name in named or target.docstring):
            continue
        _undocumented(target, out)


def test_everything_on_a_reference_page_has_a_docstring() -> None:
    package = griffe.load("aioqueue", search_paths=[str(ROOT)], resolve_aliases=True)
    missing: list[str] = []
    for path in directives():
        _undocumented(
            package[path.removeprefix("aioqueue.")] if path != "aioqueue" else package, missing
        )
    assert missing == [], f"{len(missing)} public objects without a docstring"


@pytest.mark.parametrize("path", sorted(cli_commands()))
def test_every_command_and_option_is_on_the_cli_page(path: str) -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    assert f"aioqueue {path}" in text, f"`aioqueue {path}` is not on docs/cli.md"
    # run's options are listed with their variables on the production page
    if path == "run":
        text += (ROOT / "docs" / "production.md").read_text()
    for param in cli_commands()[path].params:
        if isinstance(param, click.Option) and not param.hidden:
            assert any(
                re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text) for o in param.opts
            ), (
                path,
                param.opts,
            )
