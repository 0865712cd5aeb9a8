"""Checked by mypy in `make test`: enqueue's argument and result types follow the task.

The ``type: ignore[...]`` lines must stay errors: mypy's warn_unused_ignores
fails the build if one of them stops being an error.
"""

from __future__ import annotations

from aioqueue import Job, Queue, task


@task
async def greet(name: str, times: int = 1) -> str:
    return name * times


@task
def square(x: float) -> float:
    return x * x


async def producer(queue: Queue) -> None:
    job: Job[str] = await queue.enqueue(greet, "hi", times=2)
    text: str = await job
    number: float = await (await queue.enqueue(square, 3.0)).result(timeout=1)
    later = await queue.enqueue(greet.options(delay=5, job_id="x"), "hi")
    by_name = await queue.enqueue("app.tasks.greet", "anything", goes=True)
    many: list[Job[str]] = await queue.enqueue_many([greet.call("a"), greet.call("b", times=3)])

    await queue.enqueue(greet, 42)  # type: ignore[call-overload]
    await queue.enqueue(greet, "hi", nope=1)  # type: ignore[call-arg]
    wrong: Job[int] = await queue.enqueue(greet, "hi")  # type: ignore[call-overload]
    del text, number, later, by_name, many, wrong
