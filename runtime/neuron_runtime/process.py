"""The engine as a child process: start it in its own session, forward SIGTERM/SIGINT to it, reap it (and, because
the runtime is PID 1 in its container, the orphans it leaves), stop its process group with a grace period.

Why a child and not ``os.execvpe``: multi-node serving keeps the runtime alive next to the engine (rendezvous
before the start, watch the group, stop the engine when a peer dies). Forwarding the signals and exiting with the
child's code keeps a pod's behaviour what exec would give it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Callable, Iterator, List, Mapping, Optional, Tuple

from neuron_runtime.errors import RuntimeFailure

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
KILL_WAIT_SECONDS = 10.0  # after SIGKILL, how long to wait for the kernel to report the exit


def exit_code_from_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N, as a shell reports it


@contextlib.contextmanager
def handling_signals(handler: Callable, signals: Tuple[int, ...] = FORWARDED_SIGNALS) -> Iterator[None]:
    """``handler`` for ``signals`` inside the block; the previous handlers again after it."""
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def start(argv: List[str], env: Mapping[str, str], what: str, capture_output: bool = False) -> subprocess.Popen:
    """Start ``argv`` in its own session (a terminal's Ctrl-C reaches it once, through us, not twice); with
    ``capture_output`` its stdout and stderr come through one pipe (the caller copies them on and keeps a tail)."""
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if capture_output else {}
    try:
        return subprocess.Popen(argv, env=dict(env), start_new_session=True, **output)
    except OSError as e:
        raise RuntimeFailure(f"cannot start the {what} {argv[:3]}: {e}") from None


def reap(child: subprocess.Popen) -> Optional[int]:
    """Reap exited children (as PID 1 also the engine's orphans) without blocking; the child's exit code once it
    exited, else None."""
    if child.returncode is not None:
        return child.returncode
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return child.poll()
        if pid == 0:
            return None
        if pid == child.pid:
            child.returncode = exit_code_from_status(status)
            return child.returncode


def stop_group(child: subprocess.Popen, grace: float) -> int:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds; returns the child's exit code."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_SECONDS)):
        try:
            os.killpg(child.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        end = time.monotonic() + wait
        while time.monotonic() < end:
            code = reap(child)
            if code is not None:
                return code
            time.sleep(0.1)
    code = reap(child)
    return code if code is not None else 128 + signal.SIGKILL


def run_and_forward(argv: List[str], env: Mapping[str, str]) -> int:
    """Run ``argv`` as a child, forward SIGTERM/SIGINT to it, reap it (and orphans), return its exit code."""
    child = start(argv, env, "server")

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    with handling_signals(forward):
        while True:
            try:
                pid, status = os.waitpid(-1, 0)  # any child: as PID 1 we also reap the server's orphans
            except ChildProcessError:
                return child.wait()
            if pid == child.pid:
                child.returncode = exit_code_from_status(status)
                return child.returncode
