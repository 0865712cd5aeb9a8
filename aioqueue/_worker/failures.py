"""Error records of failed attempts, built from any exception without raising.

Whatever a task raises, its record must be written: an exception whose
``__str__`` raises, a message holding lone surrogates (file names decoded with
``surrogateescape``) that UTF-8 cannot encode, a 10 MB message. Text is made
valid UTF-8 (surrogates become ``\\udcff`` escapes) and the message and
traceback are cut to ``max_error_size`` bytes together, keeping both ends.
"""

from __future__ import annotations

import traceback

from aioqueue._protocol.codes import code_of
from aioqueue._protocol.envelope import ErrorInfo, encode_error
from aioqueue.errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_ERROR_SIZE",
    "ErrorRecords",
    "check_max_error_size",
    "cut",
    "describe",
    "log_text",
    "valid_text",
]

DEFAULT_MAX_ERROR_SIZE = 64 * 1024
SMALLEST_MAX_ERROR_SIZE = 1024
LOG_CHARS = 1000  # of an error message, in a log line

# the last resort, should building even a plain record fail
_FALLBACK = ErrorInfo(type="builtins.Exception", message="the error could not be recorded")


def check_max_error_size(size: int | None) -> int | None:
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or size < SMALLEST_MAX_ERROR_SIZE
    ):
        raise ConfigurationError(
            f"max_error_size must be None or at least {SMALLEST_MAX_ERROR_SIZE} bytes, not {size!r}"
        )
    return size


def valid_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates escaped (``\\udcff``), never an error."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8, its middle cut out if it is longer."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    marker = f"\n[... {len(data) - limit} bytes cut ...]\n"
    keep = max(limit - len(marker), 0)
    head = keep // 2
    tail = keep - head
    # a cut through a multi-byte character drops that character
    return (
        data[:head].decode("utf-8", "ignore")
        + marker
        + data[len(data) - tail :].decode("utf-8", "ignore")
    )


def describe(exc: BaseException) -> str:
    """``str(exc)``, or a note saying it failed: an exception's ``__str__`` may raise."""
    try:
        return str(exc)
    except Exception as inner:
        return f"<str() failed: {type(inner).__name__}>"


def type_name(exc: BaseException) -> str:
    cls = type(exc)
    return valid_text(f"{cls.__module__}.{cls.__qualname__}")


class ErrorRecords:
    """Makes the stored error record of an exception; ``max_size`` None: no cap."""

    def __init__(self, max_size: int | None = DEFAULT_MAX_ERROR_SIZE) -> None:
        self.max_size = max_size

    def info(
        self, exc: BaseException, *, timed_out: bool = False, code: str | None = None
    ) -> ErrorInfo:
        try:
            message = describe(exc)
            try:
                trace = "".join(traceback.format_exception(exc))
            except Exception:  # a broken __cause__ chain, a __repr__ that raises...
                trace = ""
            if self.max_size is None:
                message, trace = valid_text(message), valid_text(trace)
            else:
                # a quarter for the message; the traceback repeats it at its end anyway
                message = cut(message, self.max_size // 4)
                trace = cut(trace, self.max_size - len(message.encode()))
            if code is None:
                code = code_of(exc, timed_out=timed_out)
            return ErrorInfo(type_name(exc), message, trace, timed_out, code)
        except Exception:
            return _FALLBACK

    def encode(self, exc: BaseException, *, timed_out: bool = False) -> bytes:
        return self.encoded(self.info(exc, timed_out=timed_out))

    @staticmethod
    def encoded(info: ErrorInfo) -> bytes:
        try:
            return encode_error(info)
        except Exception:
            return encode_error(_FALLBACK)


def log_text(info: ErrorInfo) -> str:
    """``Type: message`` for a log line, short."""
    return cut(f"{info.type.rsplit('.', 1)[-1]}: {info.message}", LOG_CHARS)
