"""Redis's failures in our words: what counts as "unavailable", and the error for each."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from redis.exceptions import (
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioqueue.errors import AioqueueError, RedisOutOfMemory, RedisRefused, RedisUnavailable


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and CLI output."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


# A cluster mid-failover answers CLUSTERDOWN / TRYAGAIN, or has a slot no node
# serves yet; one with no reachable node fails redis-py's set-up with a
# RedisClusterException: all "not now, retry", like a connection refused.
UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    RedisUnavailable,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterException,
)


def where(url: str | None) -> str:
    """How errors and logs name a Redis: by its URL, password hidden, when known."""
    return "Redis" if url is None else f"Redis at {redact(url)}"


def no_answer(what: str, seconds: float | None = None) -> RedisUnavailable:
    """The error for a deadline that passed (the one wording: ``_redis.retry.deadline``)."""
    within = f" within {seconds:g}s" if seconds is not None else " in time"
    return RedisUnavailable(f"{what} did not answer{within}")


def unavailable(
    url: str | None, exc: BaseException, timeout: float | None = None
) -> RedisUnavailable:
    """The error for a connection failure, or for a deadline (``timeout``) that passed."""
    if isinstance(exc, RedisUnavailable):
        return exc
    # a deadline (anyio's, asyncio's) is a TimeoutError, an OSError without a message
    if isinstance(exc, TimeoutError) and not str(exc):
        return no_answer(where(url), timeout)
    return RedisUnavailable(f"{where(url)} is unavailable: {str(exc) or type(exc).__name__}")


def refusal(exc: ResponseError, what: str = "") -> AioqueueError:
    """Our error for an error reply of Redis (an ACL, a wrong-typed key, a script)."""
    doing = f" {what}" if what else ""
    if isinstance(exc, OutOfMemoryError):
        return RedisOutOfMemory(f"Redis refused{doing}: {exc}")
    if isinstance(exc, RedisRefused):
        return exc
    message = str(exc)
    first = message.split(" ", 1)[0]
    code = first if first.isupper() and first.isalpha() else ""
    if isinstance(exc, NoPermissionError):  # redis-py dropped the word from the text
        code = "NOPERM"
        message = f"NOPERM {message}"
    return RedisRefused(f"Redis refused{doing}: {message}", code=code)


@contextlib.contextmanager
def mapped_errors(url: str, timeout: float | None = None) -> Iterator[None]:
    """Turns redis-py's connection failures into ``RedisUnavailable`` (a deadline
    of ``timeout`` seconds that passed too, saying so) and its error replies
    into ``RedisRefused``."""
    try:
        yield
    except AioqueueError:
        raise
    except UNAVAILABLE as exc:
        raise unavailable(url, exc, timeout) from exc
    except ResponseError as exc:
        raise refusal(exc) from exc
