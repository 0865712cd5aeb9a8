"""A worker's process pool: ``@task(executor="process")`` functions run in child
processes, in parallel, and a job that must stop (timeout, abort, shutdown, lost
lease) really stops: its process is killed and a fresh one takes its place.

Threads cannot be stopped and share one GIL; a process pool per worker is the
way out of both for a deployment that runs one worker process (per container,
say). ``aioqueue run --processes N`` is the other way: N workers, one CPU slot each.

The pool is ``size`` processes (``Worker(process_pool=...)``, default the CPUs
available), forked from a template process that imported the tasks' modules
once (see ``aioqueue._worker.poolchild``). A process runs one job at a time; a job
waits for a free one. A function reaches the child by module and name, so it
must be a module-level ``def`` that its module exposes (directly or as the
task); the worker checks that at start, before taking any job.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import msgspec
import structlog
from anyio.abc import UNIXSocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from aioqueue._redis.retry import Backoff
from aioqueue._worker.poolchild import error_from_record, frame, resolve_name
from aioqueue.errors import ConfigurationError, PoolProcessLost
from aioqueue.serializers import Serializer, name_of
from aioqueue.task import Task

__all__ = ["ProcessPool", "check_importable"]

log = structlog.get_logger("aioqueue.procpool")

STARTUP_TIMEOUT = 60.0  # seconds the template may take to import the task modules
_decoder = msgspec.msgpack.Decoder()
# what reading from or writing to a process that died raises
_LINK_LOST = (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError)


def check_importable(t: Task[Any, Any]) -> tuple[str, str]:
    """(module, qualname) under which a pool process finds ``t``'s function."""
    fn = t.fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    where = f"task {t.name!r} runs in a process pool, so its function must be importable"
    if not module or module == "__main__" or "<" in qualname:
        raise ConfigurationError(
            f"{where} by module and name from another process; {module}.{qualname} is not"
            " (define it at module level in an importable module, not in __main__)"
        )
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{where}: {module}.{qualname}: {exc}") from None
    if found is not fn and getattr(found, "fn", None) is not fn:
        raise ConfigurationError(
            f"{where}: {module}.{qualname} names another object than the task's function"
        )
    return module, qualname


def _serializer_spec(serializer: Serializer) -> list[Any]:
    """How a pool process makes the same serializer: by name, else by its class."""
    name = name_of(serializer)
    if name is not None:
        return ["name", name]
    cls = type(serializer)
    where = f"{cls.__module__}.{cls.__qualname__}"
    try:
        if resolve_name(cls.__module__, cls.__qualname__) is not cls:
            raise LookupError("that name holds another object")
        cls()
    except Exception as exc:
        raise ConfigurationError(
            f"the process pool makes the serializer in its processes as {where}(), which"
            f" must be importable and take no arguments ({type(exc).__name__}: {exc})"
        ) from None
    return ["class", [cls.__module__, cls.__qualname__]]


def _remote_error(body: bytes) -> BaseException:
    try:
        return error_from_record(body)
    except Exception as read_error:
        return RuntimeError(f"the pool process's exception could not be read: {read_error}")


@dataclass(eq=False)
class _Link:
    """A socket to a child, framed: 4-byte length, then MessagePack."""

    stream: UNIXSocketStream
    reader: BufferedByteReceiveStream

    @classmethod
    async def of(cls, sock: socket.socket) -> _Link:
        stream = await UNIXSocketStream.from_socket(sock)
        return cls(stream, BufferedByteReceiveStream(stream))

    async def send(self, message: Any) -> None:
        await self.stream.send(frame(message))

    async def receive(self) -> Any:
        head = await self.reader.receive_exactly(4)
        return _decoder.decode(await self.reader.receive_exactly(int.from_bytes(head)))

    def peer_gone(self) -> bool:
        """True when the child's end is closed (it died while idle); never blocks."""
        sock = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 - anyio
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


@dataclass(eq=False)
class _Child:
    pid: int
    link: _Link


class ProcessPool:
    """``async with ProcessPool(tasks, size, serializer) as pool: await pool.run(task, data)``,
    with ``pool.serve()`` running in a task of the caller's (it forks replacements)."""

    def __init__(self, tasks: Iterable[Task[Any, Any]], size: int, serializer: Serializer) -> None:
        self._targets = {t.name: check_importable(t) for t in tasks}
        self._modules = sorted({module for module, _ in self._targets.values()})
        self._spec = _serializer_spec(serializer)
        self.size = size
        self._idle: deque[_Child] = deque()
        self._available = anyio.Semaphore(0)
        self._children: dict[int, _Child] = {}
        self._fork_lock = anyio.Lock()
        self._closing = False
        self._retired, self._to_replace = anyio.create_memory_object_stream[tuple[_Child, str]](
            math.inf
        )

    @property
    def pids(self) -> list[int]:
        """The pool's processes now (the template not included)."""
        return list(self._children)

    async def __aenter__(self) -> ProcessPool:
        try:
            with anyio.fail_after(STARTUP_TIMEOUT):
                await self._start_template()
                for _ in range(self.size):
                    self._add(await self._fork())
        except TimeoutError:
            await self.__aexit__(None, None, None)
            raise ConfigurationError(
                f"the process pool did not start within {STARTUP_TIMEOUT}s"
            ) from None
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        log.info("pool.started", processes=self.size, pids=self.pids)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self._retired.close()
        with anyio.CancelScope(shield=True):
            for child in list(self._children.values()):
                self._kill(child)
                await child.link.stream.aclose()
            with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                while True:  # retired, not replaced yet: their sockets
                    old, _ = self._to_replace.receive_nowait()
                    await old.link.stream.aclose()
            if hasattr(self, "_template"):
                await self._template_link.stream.aclose()  # EOF: the template exits
                with anyio.move_on_after(5):
                    await self._template.wait()
                if self._template.returncode is None:
                    self._template.kill()
                    await self._template.wait()

    async def serve(self) -> None:
        """Forks a replacement for every process retired by ``run``, until closed."""
        async for old, why in self._to_replace:
            await self._refill(old, why)

    async def run(self, task: Task[Any, Any], data: bytes) -> bytes:
        """Runs ``task`` on ``data`` (its serialized arguments) in a pool process;
        returns the serialized result or raises what the function raised."""
        module, qualname = self._targets[task.name]
        while True:
            await self._available.acquire()
            child = self._idle.popleft()
            if not child.link.peer_gone():
                break
            self._replace(child, "died while idle")
        try:
            await child.link.send([module, qualname, data])
            status, body = await child.link.receive()
        except BaseException as exc:
            # cancelled (timeout, abort, shutdown, lost lease) or the process died:
            # either way this process is done; a fresh one takes its place
            self._replace(child, "stopped" if _is_cancel(exc) else "died")
            if isinstance(exc, _LINK_LOST):
                raise PoolProcessLost(
                    f"pool process {child.pid} exited while running the job"
                ) from None
            raise
        self._idle.append(child)
        self._available.release()
        if status == 0:
            return bytes(body)
        raise _remote_error(body)

    # -- children --------------------------------------------------------------------

    async def _start_template(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            # -c, not -m: aioqueue (imported first) has imported poolchild already
            command = [sys.executable, "-c", "from aioqueue._worker.poolchild import main; main()"]
            self._template = await anyio.open_process(
                [*command, str(os.getpid()), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._template_link = await _Link.of(ours)
        await self._template_link.send([sys.path, self._spec, self._modules])
        status, body = await self._template_link.receive()
        if status != 0:
            error = _remote_error(body)
            raise ConfigurationError(
                f"the process pool could not import its tasks: {type(error).__name__}: {error}"
            ) from error

    async def _fork(self) -> _Child:
        ours, theirs = socket.socketpair()
        try:
            async with self._fork_lock:
                await self._template_link.stream.send_fds(b"fork", [theirs.fileno()])
                pid, error = await self._template_link.receive()
        finally:
            theirs.close()
        if pid < 0:
            ours.close()
            raise OSError(f"the pool's template could not fork: {error}")
        return _Child(pid, await _Link.of(ours))

    def _add(self, child: _Child) -> None:
        self._children[child.pid] = child
        self._idle.append(child)
        self._available.release()

    def _kill(self, child: _Child) -> None:
        self._children.pop(child.pid, None)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)

    def _replace(self, child: _Child, why: str) -> None:
        """Kills ``child`` now (no await: called from cancelled tasks too) and forks
        its replacement in the background."""
        self._kill(child)
        log.info("pool.process_stopped", pid=child.pid, reason=why)
        with contextlib.suppress(anyio.ClosedResourceError):
            self._retired.send_nowait((child, why))

    async def _refill(self, old: _Child, why: str) -> None:
        await old.link.stream.aclose()
        backoff = Backoff(0.05, 5.0)
        while not self._closing:
            try:
                new = await self._fork()
            except _LINK_LOST as exc:
                log.error("pool.fork_failed", error=str(exc), retry_in=backoff.delay)
                await backoff.wait()
                continue
            log.info("pool.process_replaced", old_pid=old.pid, pid=new.pid, reason=why)
            self._add(new)
            return


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class())
