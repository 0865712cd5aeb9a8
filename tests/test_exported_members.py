"""The public surface is exactly ``__all__``, every error is under the root, and the old
module paths still import (with a DeprecationWarning) for one release."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import warnings

import aioqueue
from aioqueue._moved import MOVED

# the documented public modules; everything else under aioqueue/ starts with "_"
PUBLIC_MODULES = {
    "aioqueue.admin",
    "aioqueue.context",
    "aioqueue.cron",
    "aioqueue.errors",
    "aioqueue.logging",
    "aioqueue.middleware",
    "aioqueue.otel",
    "aioqueue.prometheus",
    "aioqueue.serializers",
    "aioqueue.task",
    "aioqueue.testing",
    "aioqueue.web",
}


def test_all_is_exactly_the_public_names_of_the_package() -> None:
    public = {
        name
        for name, value in vars(aioqueue).items()
        if not name.startswith("_") and not (hasattr(value, "__path__") or _is_module(value))
    }
    assert set(aioqueue.__all__) - {"__version__"} == public


def _is_module(value: object) -> bool:
    return type(value).__name__ == "module"


def test_every_exported_member_says_it_belongs_to_aioqueue() -> None:
    for name in aioqueue.__all__:
        if name == "__version__":
            continue
        module = getattr(aioqueue, name).__module__
        assert (
            module == "aioqueue"
            or module in PUBLIC_MODULES
            or module.startswith("aioqueue._protocol.")
        ), (name, module)


def test_every_exception_there_derives_from_the_root_except_retry() -> None:
    errors = [
        value
        for name in aioqueue.__all__
        if isinstance(value := getattr(aioqueue, name), type) and issubclass(value, BaseException)
    ]
    assert len(errors) > 20
    for error in errors:
        if error is aioqueue.Retry:
            assert not issubclass(error, aioqueue.AioqueueError)
            continue
        assert issubclass(error, aioqueue.AioqueueError), error


def test_the_backend_refused_try_again_branch() -> None:
    for error in (
        aioqueue.RedisUnavailable,
        aioqueue.RedisOutOfMemory,
        aioqueue.QueueFull,
        aioqueue.NotReplicated,
    ):
        assert issubclass(error, aioqueue.TransientError), error
    assert not issubclass(aioqueue.ConfigurationError, aioqueue.TransientError)
    assert not issubclass(aioqueue.RedisRefused, aioqueue.TransientError)


def test_every_module_under_the_package_is_public_by_name_or_private() -> None:
    seen = set()
    for info in pkgutil.walk_packages(aioqueue.__path__, "aioqueue."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]):
            continue
        seen.add(info.name)
    assert seen == PUBLIC_MODULES


def test_every_old_module_path_still_imports_and_warns_with_its_new_place() -> None:
    # a fresh interpreter: in this one the modules are imported already
    code = (
        "import importlib, json, sys, warnings\n"
        "from aioqueue._moved import MOVED\n"
        "out = {}\n"
        "for old in MOVED:\n"
        "    with warnings.catch_warnings(record=True) as seen:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    out[old] = [module.__name__, [str(w.message) for w in seen\n"
        "                if w.category is DeprecationWarning]]\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(run.stdout)
    assert set(got) == set(MOVED)
    for old, (name, warned) in got.items():
        assert name == MOVED[old], old
        assert len(warned) == 1 and MOVED[old] in warned[0], (old, warned)


def test_an_old_path_gives_the_module_itself() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("aioqueue.connection")
    new = importlib.import_module("aioqueue._redis.connect")
    assert old is new and old.DEFAULT_URL == new.DEFAULT_URL
