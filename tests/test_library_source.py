"""The Functions library's text: its parts, the generated prelude, the version."""

from __future__ import annotations

from importlib import resources

from aioqueue._protocol import source


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
