"""What every page and API call of one dashboard app shares: its Admin (one
connection pool), the live-update hub, the settings, and the figures each
page shows, read through aioqueue.admin and its page, detail and stats parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aioqueue._admin.detail import abort
from aioqueue._admin.stats import CronEntry, Minute, WorkerRow, crons, history, latency_ms, workers
from aioqueue.admin import Admin, QueueInfo
from aioqueue.errors import ConfigurationError
from aioqueue.serializers import Serializer
from aioqueue.web._hub import Hub
from aioqueue.web._security import Authorize

__all__ = ["Dashboard", "QueueView"]


@dataclass(frozen=True, slots=True)
class QueueView:
    info: QueueInfo
    latency_ms: int | None
    minutes: list[Minute] = field(default_factory=list)


class Dashboard:
    def __init__(
        self,
        url: str,
        *,
        read_only: bool,
        authorize: Authorize | None,
        serializer: Serializer,
        queues: list[str] | None,
        result_ttl: float,
    ) -> None:
        self.admin = Admin(url)
        self.read_only = read_only
        self.authorize = authorize
        self.serializer = serializer
        self.result_ttl = result_ttl
        self._named = queues
        self.hub = Hub(self.admin, self.queue_names)

    async def aclose(self) -> None:
        await self.admin.__aexit__(None, None, None)

    async def discover(self) -> tuple[list[str], bool]:
        """The queues to show (those named, else found by a bounded SCAN: see
        ``Admin.discover``) and whether the scan stopped early."""
        if self._named is not None:
            return list(self._named), False
        return await self.admin.discover()

    async def queue_names(self) -> list[str]:
        return (await self.discover())[0]

    async def queue_view(self, name: str, now_ms: int, *, minutes: int = 60) -> QueueView:
        info = await self.admin.queue(name, now_ms)
        return QueueView(
            info,
            await latency_ms(self.admin, name, now_ms),
            await history(self.admin, name, now_ms, minutes) if minutes else [],
        )

    async def overview(self) -> dict[str, Any]:
        names, truncated = await self.discover()
        now = await self.admin.now_ms()
        views = [await self.queue_view(name, now) for name in names]
        return {"now_ms": now, "queues": views, "truncated": truncated}

    async def workers(self) -> tuple[list[WorkerRow], int, bool]:
        """The workers of the queues shown, Redis's time (ms), and whether discovery
        stopped early."""
        names, truncated = await self.discover()
        now = await self.admin.now_ms()
        return await workers(self.admin, names, now), now, truncated

    async def crons(self) -> tuple[list[CronEntry], int, bool]:
        """The cron entries of the queues shown, as ``workers`` gives the workers."""
        names, truncated = await self.discover()
        now = await self.admin.now_ms()
        return await crons(self.admin, names, now), now, truncated

    async def perform(self, queue: str, action: str, ids: list[str] | None) -> dict[str, Any]:
        """An operator's action through the library's Functions: ``retry`` and
        ``delete`` of dead jobs (``ids``, or every one dead now when None), ``abort``
        of the jobs ``ids``. What it did, for the page or the API."""
        if action == "retry":
            return {"action": action, "done": await self.admin.requeue(queue, ids)}
        if action == "delete":
            return {"action": action, "done": await self.admin.purge(queue, ids)}
        if ids is None:
            raise ConfigurationError("abort needs the ids of the jobs to abort")
        before = {job_id: await abort(self.admin, queue, job_id, self.result_ttl) for job_id in ids}
        done = sum(1 for status in before.values() if status in ("queued", "scheduled", "active"))
        return {"action": action, "done": done, "before": before}
