"""The child side of a worker's process pool (``aioqueue._worker.procpool``): ``main()``
with the arguments ``<worker pid> <fd>``.

    worker ──socket──> template: imports the pool's task modules once, then forks
                       one pool process per request (the request carries the
                       fd of the new process's socket)
    worker <─socket──> pool process: one job at a time,
                       [module, qualname, args bytes] -> [0, result bytes]
                                                      | [1, exception record]

Forking from the template makes a replacement (after a timed-out job was
killed) take milliseconds instead of a fresh interpreter's imports; the
template is single-threaded, so forking it is safe where forking the worker's
event loop process is not. The kernel reaps pool processes (SIGCHLD ignored in
the template) and, on Linux, kills each process when its parent dies
(PR_SET_PDEATHSIG): a SIGKILLed worker leaves no pool behind.

Arguments and results cross as the queue's serializer encodes them (the same
bytes a thread task would decode and its result would be stored as).
Exceptions cross as a record (class by module and name, args, attributes, all
MessagePack), rebuilt as pickle's default for exceptions would: the class
called with its args, then its attributes set; the pool process's traceback
is added as a note. Only an exception class is ever looked up and called, so
nothing here runs code chosen by the bytes, and aioqueue needs no pickle
outside the opt-in serializer.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import socket
import struct
import sys
import traceback
from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_HEAD = struct.Struct(">I")
PR_SET_PDEATHSIG = 1


def frame(message: Any) -> bytes:
    body = _encoder.encode(message)
    return _HEAD.pack(len(body)) + body


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> Any:
    head = _read_exactly(sock, _HEAD.size)
    if head is None:
        return None
    body = _read_exactly(sock, _HEAD.unpack(head)[0])
    return None if body is None else _decoder.decode(body)


def _die_with(parent: int) -> None:
    """Ends this process when ``parent`` dies (Linux; elsewhere it notices at its next read)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # died before the line above took effect
        os._exit(1)


def _error_record(exc: BaseException) -> bytes:
    cls = type(exc)
    return _encoder.encode([cls.__module__, cls.__qualname__, list(exc.args), vars(exc)])


def error_from_record(body: bytes) -> BaseException:
    """The exception an ``error_record`` describes; raises when it cannot be rebuilt."""
    module, qualname, args, attrs = _decoder.decode(body)
    cls = resolve_name(module, qualname)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"{module}.{qualname} is not an exception class")
    exc = cls(*args)
    exc.__dict__.update(attrs)
    return exc


def error_record(exc: BaseException) -> bytes:
    """The exception as a record, its traceback as a note; a stand-in when it does not
    come back whole (a custom ``__init__``, an attribute MessagePack cannot hold)."""
    where = f"raised in process-pool process {os.getpid()}:\n"
    text = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(where + text)
        data = _error_record(exc)
        error_from_record(data)  # checked here, where the stand-in can still be made
        return data
    except Exception:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        stand_in = RuntimeError(f"{name}: {exc}")
        stand_in.add_note(where + text)
        return _error_record(stand_in)


def resolve_name(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(module: str, qualname: str) -> Any:
    """The function behind ``module.qualname``: a ``Task`` found there gives its ``fn``."""
    obj = resolve_name(module, qualname)
    fn = getattr(obj, "fn", None)
    return fn if fn is not None and callable(fn) else obj


def _serializer(spec: list[Any]) -> Any:
    kind, value = spec
    if kind == "name":
        from aioqueue.serializers import get_serializer

        return get_serializer(value)
    return resolve_name(*value)()  # a Serializer class the worker checked it can build


def _serve(sock: socket.socket, serializer: Any) -> None:
    functions: dict[tuple[str, str], Any] = {}
    while True:
        message = _recv(sock)
        if message is None:
            return  # the worker closed our socket, or is gone
        module, qualname, data = message
        try:
            key = (module, qualname)
            fn = functions.get(key)
            if fn is None:
                fn = functions[key] = resolve(module, qualname)
            args, kwargs = serializer.loads(data)
            reply: list[Any] = [0, serializer.dumps(fn(*args, **kwargs))]
        except BaseException as exc:  # SystemExit too: the job failed, this process lives
            reply = [1, error_record(exc)]
        sock.sendall(frame(reply))


def _fork(sock: socket.socket, serializer: Any, fd: int) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(fd)
        sock.sendall(frame([-1, str(exc)]))
        return
    if pid == 0:
        code = 0
        try:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the job's own subprocesses
            _die_with(os.getppid())
            _serve(socket.socket(fileno=fd), serializer)
        except BaseException:
            code = 1
        finally:
            os._exit(code)  # never the template's cleanup, in a copy of it
    os.close(fd)
    sock.sendall(frame([pid, ""]))


def main() -> None:
    parent, fd = int(sys.argv[1]), int(sys.argv[2])
    _die_with(parent)
    # terminal signals reach the whole process group: the worker decides for its pool
    for name in ("SIGINT", "SIGQUIT"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps pool processes
    sock = socket.socket(fileno=fd)
    init = _recv(sock)
    if init is None:
        return
    sys_path, spec, modules = init
    sys.path[:] = sys_path
    try:
        serializer = _serializer(spec)
        for module in modules:
            importlib.import_module(module)
    except BaseException as exc:
        sock.sendall(frame([1, error_record(exc)]))
        return
    sock.sendall(frame([0, b""]))
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 16, 1)
        except OSError:
            return
        if not message:
            return  # the worker closed the pool
        for extra in fds[1:]:
            os.close(extra)
        if fds:
            _fork(sock, serializer, fds[0])


if __name__ == "__main__":
    main()
