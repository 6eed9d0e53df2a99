"""Bounded waiting for the multi-node rendezvous: a deadline on an injectable clock, and a poll loop that logs
"waiting for <what> (12s/600s)" at once and every few seconds, then fails with RendezvousTimeout (exit 4) naming
what it waited for and what to check. Tests drive both with a fake clock and sleep.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from neuron_runtime.errors import RendezvousTimeout

log = logging.getLogger(__name__)

Clock = Callable[[], float]

LOG_EVERY_SECONDS = 5.0  # progress line while waiting
POLL_SECONDS = 0.25  # DNS / connect retry period


class Deadline:
    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.total = float(seconds)
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return max(0.0, self.total - self.elapsed())

    def expired(self) -> bool:
        return self.elapsed() >= self.total

    def progress(self) -> str:
        return f"({int(self.elapsed())}s/{int(self.total)}s)"


def wait_until(
    describe: Callable[[], str],
    check: Callable[[], bool],
    deadline: Deadline,
    *,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = POLL_SECONDS,
    log_every: float = LOG_EVERY_SECONDS,
    hint: str = "",
) -> None:
    """Poll ``check`` until true; log "waiting for <describe()> (12s/600s)" at once and every ``log_every`` s;
    RendezvousTimeout when ``deadline`` passes."""
    last_log: Optional[float] = None
    while not check():
        elapsed = deadline.elapsed()
        if deadline.expired():
            raise RendezvousTimeout(
                f"multi-node rendezvous timed out after {int(deadline.total)}s waiting for {describe()}"
                + (f"; {hint}" if hint else "")
            )
        if last_log is None or elapsed - last_log >= log_every:
            log.info("waiting for %s %s", describe(), deadline.progress())
            last_log = elapsed
        sleep(min(poll, max(0.01, deadline.remaining())))
