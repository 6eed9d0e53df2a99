"""The work queue: one pass at a time per object, events during a pass collapse into exactly one more, retries
back off (and a RetryableError's own delay wins), delayed enqueues keep the earliest."""

from __future__ import annotations

import asyncio

import pytest

from neuron_operator.workqueue import RetryableError, WorkQueue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_events_for_one_object_collapse_and_a_pass_never_overlaps_itself():
    async def scenario():
        calls, active, overlaps = [], set(), []
        release = asyncio.Event()

        async def run_pass(key):
            if key in active:
                overlaps.append(key)
            active.add(key)
            calls.append(key)
            if len(calls) == 1:
                await release.wait()
            active.discard(key)

        queue = WorkQueue(run_pass, workers=3)
        queue.start()
        queue.enqueue(("ns", "a"))
        await asyncio.sleep(0.05)
        for _ in range(5):  # during the first pass: exactly one more pass afterwards
            queue.enqueue(("ns", "a"))
        release.set()
        await asyncio.sleep(0.2)
        await queue.stop()
        return calls, overlaps

    calls, overlaps = run(scenario())
    assert calls == [("ns", "a"), ("ns", "a")] and overlaps == []


def test_failures_retry_with_backoff_and_success_resets():
    async def scenario():
        times = []
        loop = asyncio.get_running_loop()

        async def run_pass(key):
            times.append(loop.time())
            if len(times) < 3:
                raise RuntimeError("boom")

        queue = WorkQueue(run_pass, workers=1)
        queue.start()
        queue.enqueue(("ns", "a"))
        await asyncio.sleep(3.5)
        await queue.stop()
        return times, queue._failures

    times, failures = run(scenario())
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[1] > gaps[0]  # 1 s, then 2 s
    assert failures == {}  # the success cleared the count


def test_a_retryable_error_brings_its_own_delay():
    async def scenario():
        times = []
        loop = asyncio.get_running_loop()

        async def run_pass(key):
            times.append(loop.time())
            if len(times) == 1:
                raise RetryableError("conflict", delay=0.1)

        queue = WorkQueue(run_pass, workers=1)
        queue.start()
        queue.enqueue(("ns", "a"))
        await asyncio.sleep(0.5)
        await queue.stop()
        return times

    times = run(scenario())
    assert len(times) == 2 and 0.09 <= times[1] - times[0] < 0.4


def test_delayed_enqueues_keep_the_earliest():
    async def scenario():
        calls = []

        async def run_pass(key):
            calls.append(asyncio.get_running_loop().time())

        queue = WorkQueue(run_pass, workers=1)
        queue.start()
        start = asyncio.get_running_loop().time()
        queue.enqueue(("ns", "a"), delay=0.1)
        queue.enqueue(("ns", "a"), delay=5)  # later: ignored
        await asyncio.sleep(0.4)
        await queue.stop()
        return start, calls

    start, calls = run(scenario())
    assert len(calls) == 1 and calls[0] - start < 0.3


@pytest.mark.parametrize("workers", [1, 4])
def test_different_objects_run_concurrently_up_to_the_worker_count(workers):
    async def scenario():
        running, peak = set(), []

        async def run_pass(key):
            running.add(key)
            peak.append(len(running))
            await asyncio.sleep(0.05)
            running.discard(key)

        queue = WorkQueue(run_pass, workers=workers)
        queue.start()
        for i in range(6):
            queue.enqueue(("ns", str(i)))
        await asyncio.sleep(0.5)
        await queue.stop()
        return max(peak)

    assert run(scenario()) == min(workers, 6)
