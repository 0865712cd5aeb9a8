"""Job ids made ahead in a pool (keys.new_job_id): the format, and no id handed out
twice, across threads and across a fork (an id given twice would make the second
job a duplicate of the first and drop it)."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest

from aioqueue._protocol.keys import check_job_id, new_job_id

ID = re.compile(r"[a-z2-7]{16}")


def test_ids_have_the_documented_form_and_are_distinct() -> None:
    ids = [new_job_id() for _ in range(5000)]  # crosses many refills of the pool
    assert all(ID.fullmatch(i) and check_job_id(i) == i for i in ids)
    assert len(set(ids)) == len(ids)
    assert set("".join(ids)) == set("abcdefghijklmnopqrstuvwxyz234567")


def test_threads_never_get_the_same_id() -> None:
    got: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(got))

    def take(into: list[str]) -> None:
        start.wait()
        into.extend(new_job_id() for _ in range(3000))

    threads = [threading.Thread(target=take, args=(into,)) for into in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for into in got for i in into]
    assert len(every) == 8 * 3000
    assert len(set(every)) == len(every)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_forked_child_does_not_reuse_its_parents_pool() -> None:
    new_job_id()  # the pool holds ids now, which the child inherits
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(new_job_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        raw = f.read().decode()
    child = {raw[i : i + 16] for i in range(0, len(raw), 16)}
    parent = {new_job_id() for _ in range(300)}
    assert len(child) == 10
    assert not child & parent
