"""Old module paths, kept importable for one release.

aioqueue 0.1 had every module at the top level (``aioqueue.worker``, ``aioqueue.connection``...),
so each one looked public. They now live in private packages; importing an old path still works,
gives the new module, and warns once with the name to import instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# old path -> where the module lives now; public names are importable from ``aioqueue``
MOVED: dict[str, str] = {
    "aioqueue.keys": "aioqueue._protocol.keys",
    "aioqueue.job": "aioqueue._protocol.envelope",
    "aioqueue.signing": "aioqueue._protocol.signing",
    "aioqueue.scripts": "aioqueue._protocol.functions",
    "aioqueue.durations": "aioqueue._protocol.durations",
    "aioqueue.garbage": "aioqueue._protocol.garbage",
    "aioqueue.connection": "aioqueue._redis.connect",
    "aioqueue.urls": "aioqueue._redis.urls",
    "aioqueue.sentinel": "aioqueue._redis.sentinel",
    "aioqueue.cluster": "aioqueue._redis.cluster",
    "aioqueue.lane": "aioqueue._redis.lane",
    "aioqueue.link": "aioqueue._redis.link",
    "aioqueue.replies": "aioqueue._redis.replies",
    "aioqueue.devredis": "aioqueue._redis.devredis",
    "aioqueue.client": "aioqueue._client.queue",
    "aioqueue.results": "aioqueue._client.job",
    "aioqueue.waiter": "aioqueue._client.waiter",
    "aioqueue.sharded_results": "aioqueue._client.sharded",
    "aioqueue.subscriber": "aioqueue._client.subscriber",
    "aioqueue.worker": "aioqueue._worker.worker",
    "aioqueue.settings": "aioqueue._worker.settings",
    "aioqueue.executor": "aioqueue._worker.executor",
    "aioqueue.outcomes": "aioqueue._worker.outcomes",
    "aioqueue.heartbeat": "aioqueue._worker.heartbeat",
    "aioqueue.handoff": "aioqueue._worker.handoff",
    "aioqueue.dispatch": "aioqueue._worker.dispatch",
    "aioqueue.threads": "aioqueue._worker.threads",
    "aioqueue.procpool": "aioqueue._worker.procpool",
    "aioqueue.poolchild": "aioqueue._worker.poolchild",
    "aioqueue.scheduler": "aioqueue._worker.cron_runner",
    "aioqueue.failures": "aioqueue._worker.failures",
    "aioqueue.supervise": "aioqueue._supervise",
    "aioqueue.cli": "aioqueue._cli.main",
    "aioqueue.cli_admin": "aioqueue._cli.admin",
    "aioqueue.cli_jobs": "aioqueue._cli.jobs",
    "aioqueue.cli_output": "aioqueue._cli.output",
    "aioqueue.runner": "aioqueue._cli.runner",
    "aioqueue.terminal": "aioqueue._text",
}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} is private and moved to {new}: import public names from aioqueue"
            " (this path goes away in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        # the import system records the old name as an alias of the module itself
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        return None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
