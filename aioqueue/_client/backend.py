"""What a ``Job`` handle and the result waiters need of their ``Queue``, and nothing more.

Both used to take the whole ``Queue``; against these protocols each can be built and tested
alone (a fake backend of a few attributes will do), and neither imports the ``Queue``.
"""

from __future__ import annotations

from typing import Any, Protocol

from aioqueue._protocol.functions import Scripts
from aioqueue.serializers import Serializer


class ResultWait(Protocol):
    async def wait(self, queue: str, job_id: str, timeout: float | None) -> tuple[str, bytes]:
        """(status, blob) of the job once it ended; raises ``ResultTimeout``/``QueueClosed``."""
        ...


class WaiterHost(Protocol):
    """What the result waiters read of their ``Queue``."""

    @property
    def scripts(self) -> Scripts: ...

    @property
    def timeout(self) -> float: ...

    @property
    def health_check_interval(self) -> float: ...


class JobBackend(WaiterHost, Protocol):
    """What a ``Job`` handle calls on its ``Queue``."""

    @property
    def url(self) -> str: ...

    @property
    def serializer(self) -> Serializer: ...

    @property
    def result_ttl(self) -> float: ...

    @property
    def waiter(self) -> ResultWait: ...

    async def command(self, *args: Any) -> Any:
        """One plain read on the backend's shared connections."""
        ...
