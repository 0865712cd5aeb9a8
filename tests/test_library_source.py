"""The Functions library's text: its parts, the generated prelude, the version."""

from __future__ import annotations

import re
from importlib import resources

from aioqueue._protocol import source
from aioqueue._protocol.envelope import JobStatus
from aioqueue._protocol.keys import SUFFIXES


def test_every_part_is_read_from_the_package_and_none_is_left_out() -> None:
    lua = resources.files("aioqueue._protocol").joinpath("lua")
    on_disk = {p.name.removesuffix(".lua") for p in lua.iterdir() if p.name.endswith(".lua")}
    assert on_disk == set(source.PARTS)
    parts = source.read_parts()
    for name, text in parts.items():
        assert text.strip(), name
        assert len(text.splitlines()) <= 400, name
    # the assembled text is the parts in their order, the prelude after the header
    text = source.assemble()
    assert text.startswith("#!lua name=aioqueue___VERSION__\n")
    at = [text.index(parts[name]) for name in source.PARTS]
    assert at == sorted(at)
    assert at[0] < text.index(source.prelude()) < at[1]
    assert text.replace("__VERSION__", source.VERSION) == source.LIBRARY


def test_the_version_covers_every_part_and_the_prelude() -> None:
    parts = source.read_parts()
    base = source.version_of(source.assemble(parts))
    assert base == source.VERSION
    changed = dict(parts, claim=parts["claim"] + "\n-- a comment\n")
    assert source.version_of(source.assemble(changed)) != base
    other = source.prelude({**source.CONSTANTS, "ENVELOPE_VERSION": 99})
    assert source.version_of(source.assemble(parts, other)) != base


def test_a_status_renamed_on_the_python_side_is_a_new_library() -> None:
    parts = source.read_parts()
    statuses = {s.name.lower(): s.value for s in JobStatus}
    assert source.prelude(statuses=statuses) == source.prelude()
    renamed = source.prelude(statuses={**statuses, "queued": "waiting"})
    assert "queued = 'waiting'" in renamed
    assert source.version_of(source.assemble(parts, renamed)) != source.VERSION
    moved = source.prelude(suffixes={**SUFFIXES, "ready": "ready2"})
    assert source.version_of(source.assemble(parts, moved)) != source.VERSION


# a quoted literal the Lua must take from the prelude instead
_STATUS = re.compile("['\"](" + "|".join(s.value for s in JobStatus) + ")['\"]")
# a key built from the queue's prefix and a literal suffix
_KEY = re.compile(r"""(prefix|keys\[1\])\s*\.\.\s*['"]""")


def test_the_lua_spells_no_status_and_no_key_suffix_itself() -> None:
    found = []
    for name, text in source.read_parts().items():
        if name == "header":  # the doc comment describes the job hash in prose
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("--", 1)[0]  # comments may name them
            if _STATUS.search(code) or _KEY.search(code):
                found.append(f"{name}.lua:{number}: {line.strip()}")
    assert found == []
    # and everything it uses from the prelude is defined there
    text = "\n".join(source.read_parts().values())
    generated = source.prelude()
    for table in ("ST", "KEY", "EV", "CODE"):
        defined = generated.split(f"local {table} = ", 1)[1].split("\n", 1)[0]
        for used in sorted(set(re.findall(rf"\b{table}\.(\w+)", text))):
            assert re.search(rf"[{{ ]{used} = ", defined), (table, used)
