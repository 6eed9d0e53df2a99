"""A per-object work queue on the operator's event loop: level-based reconciles, deduplicated, one at a time
per object, retried with capped exponential backoff on transient errors.

kopf delivers watch events; this queue decides when and how often `Reconciler.reconcile` runs. Many events for
one object collapse into one pass, and an event arriving during a pass schedules exactly one more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Optional

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
PassFn = Callable[[Key], Awaitable[None]]

MAX_BACKOFF_SECONDS = 60.0


class RetryableError(Exception):
    def __init__(self, message: str, delay: Optional[float] = None):
        super().__init__(message)
        self.delay = delay


class WorkQueue:
    def __init__(self, run_pass: PassFn, workers: int = 4,
                 on_done: Optional[Callable[[Key, float, Optional[BaseException]], None]] = None):
        self._run_pass = run_pass
        self._workers = workers
        self._on_done = on_done
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"reconcile-worker-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for handle in self._timers.values():
            handle.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        if delay > 0:
            loop = asyncio.get_running_loop()
            existing = self._timers.get(key)
            if existing is not None and existing.when() <= loop.time() + delay:
                return  # an earlier retry is already scheduled
            if existing is not None:
                existing.cancel()
            self._timers[key] = loop.call_later(delay, self._fire_timer, key)
            return
        if key in self._active:
            self._dirty.add(key)  # run once more after the current pass
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _fire_timer(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            started = time.monotonic()
            error: Optional[BaseException] = None
            try:
                await self._run_pass(key)
                self._failures.pop(key, None)
            except RetryableError as exc:
                error = exc
                self._retry(key, exc.delay, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged with traceback and retried; the operator must go on
                error = exc
                log.exception("reconcile of %s/%s failed", *key)
                self._retry(key, None, exc)
            finally:
                self._active.discard(key)
                if self._on_done:
                    self._on_done(key, time.monotonic() - started, error)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)
                self._queue.task_done()

    def _retry(self, key: Key, delay: Optional[float], exc: BaseException) -> None:
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        backoff = delay if delay is not None else min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(count, 8))
        log.info("reconcile of %s/%s will retry in %.1fs: %s", key[0], key[1], backoff, exc)
        self.enqueue(key, delay=backoff)
