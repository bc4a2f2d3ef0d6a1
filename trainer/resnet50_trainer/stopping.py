"""Stopping on SIGTERM with the work kept: a drain, an eviction, a preemption or a deleted
pod costs the steps since the last report, not an epoch.

Kubernetes sends SIGTERM to the pod's first process and SIGKILL after the grace period;
torchrun (launch.py) passes SIGTERM on to its workers. Once training has started (before,
there is nothing to save, and SIGTERM ends the process at once), a worker marks it
(StopSignal), the ranks agree on it in the all-reduce of the next report
(engine.train_one_epoch), rank 0 saves a mid-epoch checkpoint of that step, and every
process exits with contract.EXIT_STOPPED. Ranks of other nodes, which got no signal, stop
at the same step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Stopped(Exception):
    """The run stopped on request after saving its state: exit contract.EXIT_STOPPED."""


class StopSignal:
    """Whether this process has received SIGTERM, from `install` to `uninstall`."""

    def __init__(self) -> None:
        self.received: str | None = None  # the signal's name
        self._previous: object = None

    def install(self) -> None:
        # Only the main thread may set handlers (tests also run trainings in threads).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._mark)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
            self._previous = None

    def _mark(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
