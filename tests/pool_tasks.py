"""Tasks that run in a worker's process pool (importable by its pool processes)."""

from __future__ import annotations

import os
import time

from aioqueue import Retry, task


@task(executor="process", max_attempts=1)
def pid_of(x: int) -> dict[str, int]:
    return {"pid": os.getpid(), "x": x * 2}


@task(executor="process", max_attempts=1)
def fails(message: str) -> None:
    raise ValueError(message)


class Picky(Exception):
    """An exception whose __init__ does not take its message back: not rebuilt from its args."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@task(executor="process", max_attempts=1)
def fails_picky() -> None:
    raise Picky(7, "no")


@task(executor="process", max_attempts=2)
def retries_once(url: str, key: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        if client.incr(key) == 1:
            raise Retry(defer=0.01)
        return os.getpid()
    finally:
        client.close()


@task(executor="process", max_attempts=1, timeout=0.1)
def hangs(url: str, key: str) -> None:
    """Reports its pid, then blocks far past its timeout."""
    import redis

    client = redis.Redis.from_url(url)
    client.rpush(key, os.getpid())
    client.close()
    time.sleep(600)


@task(executor="process", max_attempts=1)
def dies() -> None:
    os._exit(9)


@task(executor="process", max_attempts=1)
def returns_unencodable() -> object:
    return object()


@task(executor="process", max_attempts=1)
def pair(url: str, prefix: str) -> int:
    """Returns its pid once a partner job runs too: two of these need two processes."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        if int(client.incr(f"{prefix}:n")) % 2:
            if client.blpop([f"{prefix}:go"], timeout=20) is None:
                raise TimeoutError("no partner")
        else:
            client.rpush(f"{prefix}:go", "1")
        return os.getpid()
    finally:
        client.close()


@task(executor="process", max_attempts=1, timeout=300)
def sleeps(url: str, key: str) -> None:
    """Reports its pid, then sleeps until stopped."""
    import redis

    client = redis.Redis.from_url(url)
    client.rpush(key, os.getpid())
    client.close()
    time.sleep(600)
