"""aioqueue.testing's build of the Functions library: production code on a test clock.

The build is the production source with every ``redis.call(`` and
``redis.pcall(`` routed through ``aqt_call`` / ``aqt_pcall`` (prelude.lua: TIME
answers the test clock, TTLs are kept on it), its Functions registered so that
each ends with the clock's drive, and the timeline functions the clock needs
(timeline.lua) after it. It carries
the production function names under its own library name, so every client of
the private Redis (a ``Queue`` made by the code under test too) runs on the test
clock, and a worker not started by ``run_worker`` refuses it (``scripts.load``).
"""

from __future__ import annotations

import re
from importlib import resources

from aioqueue._protocol.functions import LIBRARY, TESTING_LIBRARY, VERSION

__all__ = ["CLOCK_KEY", "DRIVE_KEY", "SETTLED_KEY", "TEST_LIBRARY", "TTL_KEY", "timeline_function"]

CLOCK_KEY = "aq:testing:clock"  # test time in microseconds (prelude.lua)
TTL_KEY = "aq:testing:ttl"  # key -> its deadline on the test clock (ms)
DRIVE_KEY = "aq:testing:drive"  # what a waiting advance or drain waits for (timeline.lua)
SETTLED_KEY = "aq:testing:settled"  # list: why the drive stopped, "<why>:<ms>"

# What the prelude intercepts, and the forms of them it cannot: a build that
# would miss a time or a TTL must fail here, not run on the wrong clock.
_CALL = re.compile(r"\bredis\.(p?call)\(")
_REGISTER = re.compile(r"\bredis\.register_function\b")
_UNSUPPORTED = re.compile(
    r"'(PSETEX|SETEX|GETEX|EXPIREAT|PEXPIREAT|EXPIRETIME|PEXPIRETIME|TTL|PTTL)'", re.IGNORECASE
)


def _text(name: str) -> str:
    return resources.files("aioqueue.testing").joinpath(name).read_text()


def build(production: str = LIBRARY) -> str:
    header, _, body = production.partition("\n")
    if header != f"#!lua name=aioqueue_{VERSION}":
        raise RuntimeError(f"unexpected first line of the Functions library: {header!r}")
    unsupported = _UNSUPPORTED.search(body)
    if unsupported:
        raise RuntimeError(
            f"aioqueue.testing's clock does not handle {unsupported.group(0)!r} in the library"
        )
    routed, calls = _CALL.subn(r"aqt_\1(", body)
    if calls == 0:
        raise RuntimeError("no redis.call( in the Functions library")
    # every Function ends with the clock's drive (prelude.lua, timeline.lua)
    routed, registers = _REGISTER.subn("aqt_register_function", routed)
    if registers == 0:
        raise RuntimeError("no redis.register_function in the Functions library")
    timeline = _text("timeline.lua").replace("__VERSION__", VERSION)
    return f"#!lua name={TESTING_LIBRARY}\n{_text('prelude.lua')}\n{routed}\n{timeline}"


TEST_LIBRARY = build()


def timeline_function(name: str) -> str:
    """The name of one of timeline.lua's functions in this build."""
    return f"aqt_{VERSION}_{name}"
