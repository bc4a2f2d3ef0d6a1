"""Which pods of an attempt failed, whether a restart may help, and which failure was first."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from resnet50_operator.reconcile.observe import PodView
from resnet50_trainer import contract

# When one rank dies, its peers' collectives fail within moments and they exit 1 too:
# failures that end this close to the first one are one event, and a retryable cause wins.
SAME_INCIDENT = dt.timedelta(seconds=5)
MESSAGE_TAIL = 1000  # characters of a termination message kept in status
ONE_LINE = 200  # characters of it in one line of the restart history


@dataclass(frozen=True)
class Failure:
    pod: str
    retryable: bool
    reason: str
    message: str
    exit_code: int | None = None
    finished_at: dt.datetime | None = None

    def describe(self, one_line: bool = False) -> str:
        """pod NAME exit code C (REASON): MESSAGE; `one_line`: only the message's last
        non-empty line, cut to ONE_LINE characters (a log's tail is many lines)."""
        code = f" exit code {self.exit_code}" if self.exit_code is not None else ""
        text = f"pod {self.pod}{code} ({self.reason})"
        message = self.message
        if one_line:
            last = next((ln.strip() for ln in reversed(message.splitlines()) if ln.strip()), "")
            message = last if len(last) <= ONE_LINE else last[:ONE_LINE - 3] + "..."
        return f"{text}: {message}" if message else text


def classify(pod: PodView) -> Failure | None:
    """Whether a pod of the running attempt failed, and whether a restart may help."""
    if pod.phase == "Failed":
        message = _tail(pod.container_message or pod.pod_message)
        code, at = pod.exit_code, pod.finished_at
        if pod.pod_reason:  # Evicted, Preempting, NodeLost, ...: the node's doing, not ours
            return Failure(pod.name, True, pod.pod_reason, message, code, at)
        if code is None:
            return Failure(pod.name, True, pod.container_reason or "Failed", message)
        if contract.retried(code):  # killed by a signal: the OOM killer, SIGTERM, ...
            return Failure(pod.name, True, _signal_reason(pod, code), message, code, at)
        known = contract.EXIT_CLASSES.get(code)  # else a crash: the container's own reason
        reason = known.reason if known else pod.container_reason or "Error"
        return Failure(pod.name, False, reason, message, code, at)
    if pod.phase == "Unknown":
        return Failure(pod.name, True, "NodeLost", "the pod's node stopped reporting")
    if pod.deleting:
        return Failure(pod.name, True, "PodDeleted", "the pod was deleted while training")
    return None


def root_cause(failures: list[Failure]) -> Failure:
    """The failure that brought the attempt down; the others followed from it.

    Failures without a time (a deleted pod, a lost node) and those that ended within
    SAME_INCIDENT of the earliest one are candidates; among them a retryable one is the
    cause, since a rank killed by a signal makes its peers exit 1 at once.
    """
    times = [f.finished_at for f in failures if f.finished_at is not None]
    first = min(times, default=None)
    candidates = [f for f in failures if first is None or f.finished_at is None
                  or f.finished_at - first <= SAME_INCIDENT]
    return next((f for f in candidates if f.retryable), candidates[0])


def _signal_reason(pod: PodView, code: int) -> str:
    """The kubelet's reason when it says more than "Error" (OOMKilled), else the signal's:
    Killed (SIGKILL), Terminated (SIGTERM) or Signal. A kill is retried; a crash, which
    the kubelet also calls Error, is not: the two must not read the same."""
    signal = code - contract.SIGNAL_EXIT_BASE
    named = "Killed" if signal == 9 else "Terminated" if signal == 15 else "Signal"
    return pod.container_reason if pod.container_reason not in ("", "Error") else named


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_TAIL else "..." + text[-MESSAGE_TAIL:]
