"""Worker processes under one supervisor: ``aioqueue run TARGET --processes N``.

config       the settings and the operator's values for them
policy       restart backoff, exit decisions, rolling plan: pure, tested without processes
process      the handle on one child: spawn, signal, control line, liveness, memory
signals      what wakes the select() loop: signal handlers and the reload watcher, queued
reload       the ``--reload`` file watcher thread
supervisor   the select() loop that ties them together
child        the other end: a worker process talking to its supervisor
"""

from aioqueue._supervise.config import SupervisorConfig, default_processes, parse_size
from aioqueue._supervise.supervisor import Supervisor

__all__ = ["Supervisor", "SupervisorConfig", "default_processes", "parse_size"]
