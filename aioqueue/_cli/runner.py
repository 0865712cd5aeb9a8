"""``aioqueue run``: resolve the settings, then run one worker here or supervise many.

Precedence: the CLI flag, else its AIOQUEUE_* variable (click merges those two
into ``RunOptions``, None when neither is given), else the Worker's own value.
They are applied in one ``Worker.configure`` call, so values derived from them
(prefetch from concurrency, heartbeat from lease) are derived from the final
ones. Supervised children get the given values in their environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from aioqueue._cli.target import freeze_imports, load_worker, run_worker
from aioqueue._redis.connect import DEFAULT_URL
from aioqueue._redis.devredis import DevRedis, answers
from aioqueue._redis.errors import redact
from aioqueue._supervise import Supervisor, SupervisorConfig, default_processes, parse_size
from aioqueue._supervise.child import run_supervised
from aioqueue._supervise.metrics import METRICS_DIR_ENV, MetricsServer
from aioqueue._supervise.process import CONTROL_FD_ENV
from aioqueue._worker.settings import env_var
from aioqueue._worker.worker import Worker
from aioqueue.errors import ConfigurationError

__all__ = ["RunOptions", "run_target"]

log = structlog.get_logger("aioqueue.run")


# the options a supervised child reads from its environment (its command line
# would show a Redis password in ps)
CHILD_SETTINGS = (
    "redis_url",
    "queues",
    "concurrency",
    "prefetch",
    "cpu_slots",
    "process_pool",
    "lease",
    "heartbeat",
    "grace",
    "burst",
    "max_jobs_per_child",
    "events_maxlen",
)


@dataclass(frozen=True, slots=True)
class RunOptions:
    processes: int | None = None
    redis_url: str | None = None
    queues: str | None = None
    concurrency: int | None = None
    prefetch: int | None = None
    cpu_slots: int | None = None
    process_pool: int | None = None
    lease: float | None = None
    heartbeat: float | None = None
    grace: float | None = None
    burst: bool | None = None
    max_jobs_per_child: int | None = None
    events_maxlen: int | None = None
    max_memory_per_child: str | None = None
    pid_file: Path | None = None
    reload: bool = False
    reload_dirs: tuple[Path, ...] = ()
    dev: bool = False
    ping_timeout: float = 30.0
    restart_backoff: float = 0.5
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"  # noqa: S104  (a scraper runs on another host)
    no_uvloop: bool = False
    child: bool = False

    def apply(self, worker: Worker) -> None:
        """Overrides the worker's own values with the ones given here."""
        queues = None
        if self.queues:
            queues = tuple(q.strip() for q in self.queues.split(",") if q.strip())
        worker.configure(
            redis_url=self.redis_url or None,
            queues=queues,
            concurrency=self.concurrency,
            prefetch=self.prefetch,
            cpu_slots=self.cpu_slots,
            process_pool=self.process_pool,
            lease=self.lease,
            heartbeat=self.heartbeat,
            grace=self.grace,
            burst=self.burst,
            max_jobs=self.max_jobs_per_child,
            events_maxlen=self.events_maxlen,
        )

    def child_env(self) -> dict[str, str]:
        """The given worker settings as the environment of supervised children."""
        env = {}
        for name in CHILD_SETTINGS:
            value = getattr(self, name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            if value is not None:
                env[env_var(name)] = str(value)
        return env


def run_target(target: str, opts: RunOptions, cli_args: list[str]) -> int:
    """Runs ``aioqueue run TARGET``; returns the process exit code."""
    worker = load_worker(target)  # in the supervisor too: a bad target fails here, once
    opts.apply(worker)
    use_uvloop = not opts.no_uvloop
    if opts.child:
        if os.environ.get(METRICS_DIR_ENV):  # the supervisor serves what this process counts
            _count_metrics(worker)
        fd = int(os.environ[CONTROL_FD_ENV])
        freeze_imports()
        anyio.run(run_supervised, worker, fd, backend_options={"use_uvloop": use_uvloop})
        return 0
    processes = opts.processes if opts.processes is not None else default_processes()
    max_memory = _size(opts.max_memory_per_child)
    if processes == 0 and (opts.reload or max_memory is not None):
        raise ConfigurationError("--reload and --max-memory-per-child need --processes 1 or more")
    child_env = opts.child_env()
    dev: DevRedis | None = None
    metrics: MetricsServer | None = None
    try:
        if opts.dev and opts.redis_url is None and worker.redis_url == DEFAULT_URL:
            if answers(DEFAULT_URL):
                log.info("devredis.not_needed", url=redact(DEFAULT_URL))
            else:
                dev = DevRedis()
                child_env["AIOQUEUE_REDIS_URL"] = dev.start()
                worker.configure(redis_url=child_env["AIOQUEUE_REDIS_URL"])
        if opts.metrics_port is not None:
            metrics = MetricsServer(
                opts.metrics_host,
                opts.metrics_port,
                worker.redis_url,
                worker.queues,
                supervised=processes > 0,
            )
            child_env.update(metrics.start())
            if processes == 0:
                _count_metrics(worker)
        if processes == 0:
            run_worker(worker, use_uvloop=use_uvloop)
            return 0
        config = SupervisorConfig(
            target=target,
            processes=processes,
            child_env=child_env,
            cli_args=cli_args,
            run_args=[] if use_uvloop else ["--no-uvloop"],
            grace=worker.grace,
            lease=worker.lease,
            burst=worker.burst,
            max_memory=max_memory,
            ping_interval=min(1.0, opts.ping_timeout / 4),
            ping_timeout=opts.ping_timeout,
            restart_backoff=opts.restart_backoff,
            pid_file=opts.pid_file,
            reload_dirs=_reload_dirs(opts),
            on_child_exit=None if metrics is None else metrics.child_exited,
        )
        return Supervisor(config).run()
    finally:
        if metrics is not None:
            metrics.close()
        if dev is not None:
            dev.stop()


def _count_metrics(worker: Worker) -> None:
    """Adds PrometheusMiddleware, unless the worker has one already (it would count twice)."""
    from aioqueue.prometheus import PrometheusMiddleware

    if not any(isinstance(m, PrometheusMiddleware) for m in worker.middleware):
        worker.add_middleware(PrometheusMiddleware())


def _size(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ConfigurationError(f"--max-memory-per-child: {exc}") from None


def _reload_dirs(opts: RunOptions) -> list[Path]:
    if not opts.reload:
        return []
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "--reload needs watchfiles: pip install 'aioqueue[reload]'"
        ) from None
    return list(opts.reload_dirs) or [Path.cwd()]
