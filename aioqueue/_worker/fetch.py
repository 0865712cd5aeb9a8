"""The fetch loop: claim what the worker has room for, block when there is nothing, hand it on.

    room? ──no──> wait for a delivery to end
      │yes
    claim (queues in priority order, one ``claim`` call each, shielded)
      │ got some ──> Consumers.take (the whole batch, this loop pass)
      │ none, due later ──> block on the wake lists until then (WakeWaiter:
      │                     BLPOP, CLIENT UNBLOCK at the due time)
      │ none, burst ──> stop once this worker's last job has ended
      └ Redis away or an error reply ──> logged, counted, backed off

How much room there is, and for which kind of job, is ``dispatch.py``'s
(fair dispatch); a cluster blocks on each queue's slot with ``ClusterWaker``.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from aioqueue._protocol.functions import Claimed, Scripts
from aioqueue._protocol.keys import QueueKeys
from aioqueue._redis.cluster import ClusterWaker
from aioqueue._redis.connect import RedisClient
from aioqueue._redis.errors import UNAVAILABLE
from aioqueue._redis.retry import Backoff
from aioqueue._worker.deliveries import Deliveries
from aioqueue._worker.dispatch import Dispatch
from aioqueue._worker.settings import WorkerSettings
from aioqueue._worker.stats import WorkerStats
from aioqueue._worker.wake import WakeWaiter

__all__ = ["Fetcher"]

log = structlog.get_logger("aioqueue.worker")

IDLE_WAIT = 5.0  # longest a worker blocks without a look at its queues
CLAIM_FIRST, CLAIM_MOST = 0.05, 2.0  # seconds between claims while Redis is away: back within 2 s
STALL_SLACK = 10.0  # a blocking read this long past its own timeout is a stalled link
WAIT_FAILED_PAUSE = 1.0  # after a wake list that cannot be read (a planted key)


class Fetcher:
    def __init__(
        self,
        worker_id: str,
        settings: WorkerSettings,
        scripts: Scripts,
        redis: RedisClient,
        block_redis: RedisClient,
        dispatch: Dispatch,
        deliveries: Deliveries,
        stats: WorkerStats,
        *,
        deliver: Callable[[list[Claimed]], None],
        stop: Callable[[], None],
        stopping: anyio.Event,
        done: Callable[[], None],
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.scripts = scripts
        self.dispatch = dispatch
        self.deliveries = deliveries
        self.stats = stats
        self._deliver = deliver  # the consumers take a claimed batch
        self._stop = stop  # burst: the queues are drained
        self._stopping = stopping
        self._done = done  # the loop ended: nothing more will be delivered
        self._keys = [QueueKeys(q) for q in settings.queues]
        self.nudge = self._keys[0].nudge(worker_id)
        self.cluster_waker: ClusterWaker | None = None
        self.waker: WakeWaiter | None = None
        if isinstance(block_redis, RedisCluster):
            # wake lists of different queues live in different slots: no single BLPOP
            sources = dispatch.cluster_sources(self._keys, self.nudge)
            self.cluster_waker = ClusterWaker(block_redis, sources, IDLE_WAIT)
        else:
            assert isinstance(redis, Redis) and isinstance(block_redis, Redis)
            self.waker = WakeWaiter(block_redis, redis, IDLE_WAIT)
        self._scope = anyio.CancelScope()
        self._ended = anyio.Event()

    async def run(self) -> None:
        with self._scope:
            try:
                await self._loop()
            finally:
                self._done()
                self._ended.set()

    async def stop(self) -> None:
        """Cancels the loop (between claims: a claim under way is shielded) and waits for it."""
        self._scope.cancel()
        await self._ended.wait()

    async def _loop(self) -> None:
        backoff = Backoff(CLAIM_FIRST, CLAIM_MOST)
        backlog = False
        while not self._stopping.is_set():
            if backlog:
                # The last claim was cut by capacity, so more jobs wait: one pass of
                # the event loop lets finished jobs free their slots, and the next
                # claim takes many jobs in one round trip instead of one.
                await anyio.lowlevel.checkpoint()
            want = self.dispatch.capacity() - len(self.deliveries)
            if want <= 0:
                await self.deliveries.slot_freed()
                continue
            try:
                # shielded: a claim that ran in Redis but whose reply was
                # dropped by a cancel would leave jobs held until their lease ends
                with anyio.CancelScope(shield=True):
                    wait_ms, claimed = await self._claim(want)
            except (*UNAVAILABLE, ResponseError) as exc:
                self.stats.loop_failed("claim", exc, backoff.delay)
                await backoff.wait()
                continue
            backoff.reset()
            backlog = len(claimed) == want
            if not claimed:
                if self.settings.burst:
                    if not len(self.deliveries):
                        self._stop()  # drained: the queues are empty and nothing runs here
                        return
                    await self._burst_wait(wait_ms)
                elif wait_ms != 0:
                    await self._block(wait_ms)
                continue
            # hand the whole batch over in this loop pass (the capacity bounds it)
            self._deliver(claimed)

    async def _claim(self, want: int) -> tuple[float, list[Claimed]]:
        """Claims up to ``want`` jobs, queues in priority order; returns the shortest wait."""
        claimed: list[Claimed] = []
        wait = -1.0
        lease_ms = int(self.settings.lease * 1000)
        dispatch = self.dispatch
        cpu_free, run_free = dispatch.cpu_free(), dispatch.run_free()
        dispatch.cpu_waiting = False
        for queue in self.settings.queues:
            reply = await self.scripts.claim(
                queue,
                want - len(claimed),
                self.worker_id,
                lease_ms,
                cpu_free=cpu_free,
                cpu_tasks=dispatch.cpu_tasks,
                run_free=run_free,
            )
            wait_ms, got = reply.wait_ms, reply.jobs
            dispatch.cpu_waiting |= reply.waiting_cpu > 0
            claimed.extend(got)
            cpu_free = max(0, cpu_free - sum(job.cpu for job in got))
            run_free = max(0, run_free - len(got))
            if wait_ms >= 0 and (wait < 0 or wait_ms < wait):
                wait = wait_ms
            if len(claimed) >= want:
                break
        return wait, claimed

    async def _block(self, wait_ms: float) -> None:
        timeout = IDLE_WAIT if wait_ms < 0 else min(wait_ms / 1000, IDLE_WAIT)
        self.dispatch.blocking()
        try:
            await self._block_on(timeout, wait_ms)
        finally:
            self.dispatch.awake()

    async def _block_on(self, timeout: float, wait_ms: float) -> None:
        if self.cluster_waker is not None:
            await self.cluster_waker.wait(timeout)
            return
        assert self.waker is not None
        keys = [k for queue_keys in self._keys for k in self.dispatch.wake_keys(queue_keys)]
        if self.dispatch.cpu_tasks:
            keys.append(self.nudge)
        try:
            with anyio.fail_after(timeout + STALL_SLACK):  # a stalled link must not wedge us
                await self.waker.wait(keys, wait_ms)
        except TimeoutError:
            log.warning("worker.redis_stalled", waited=timeout + STALL_SLACK)
        except (*UNAVAILABLE, ResponseError) as exc:  # a planted wake key: the next claim moves it
            self.stats.loop_failed("wait", exc, WAIT_FAILED_PAUSE)
            await anyio.sleep(WAIT_FAILED_PAUSE)

    async def _burst_wait(self, wait_ms: float) -> None:
        """Blocks until new work arrives or this worker's last job ends, whichever first."""
        async with anyio.create_task_group() as tg:

            async def woken() -> None:
                await self._block(wait_ms)
                tg.cancel_scope.cancel()

            tg.start_soon(woken)
            await self.deliveries.all_done()
            tg.cancel_scope.cancel()
