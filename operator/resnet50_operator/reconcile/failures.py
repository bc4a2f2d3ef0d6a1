"""Which pods of an attempt failed, whether a restart may help, whether Kubernetes took
them away (a disruption), and which failure was first."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from resnet50_operator.reconcile.observe import PodView
from resnet50_trainer import contract

# When one rank dies, its peers' collectives fail within moments and they exit 1 too:
# failures that end this close to the first one are one event, whose cause is a
# disruption, else a retryable failure (root_cause).
SAME_INCIDENT = dt.timedelta(seconds=5)
MESSAGE_TAIL = 1000  # characters of a termination message kept in status
ONE_LINE = 200  # characters of it in one line of the restart history
# A failed pod's status.reason when its node took it away, for pods without the
# DisruptionTarget condition (older kubelets): the kubelet's node-pressure eviction
# (Evicted), its preemption for a critical pod (Preempting), a graceful node shutdown
# (Shutdown, Terminated, NodeShutdown), and a node the node controller gave up (NodeLost).
DISRUPTION_REASONS = frozenset({"Evicted", "Preempting", "Shutdown", "Terminated",
                                "NodeShutdown", "NodeLost"})


@dataclass(frozen=True)
class Failure:
    pod: str
    retryable: bool
    reason: str
    message: str
    exit_code: int | None = None
    at: dt.datetime | None = None  # when it happened; for a disruption, when that began
    # Kubernetes took the pod away: the group restarts without spending maxRestarts.
    disruption: bool = False

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
    """Whether a pod of the running attempt failed, whether a restart may help, and whether
    it was a disruption rather than a failure of the training."""
    if disrupted := _disruption(pod):
        return disrupted
    if pod.phase == "Failed":
        message = _tail(pod.container_message or pod.pod_message)
        code, at = pod.exit_code, pod.finished_at
        if pod.pod_reason:  # UnexpectedAdmissionError, OutOfcpu, ...: the node's doing
            return Failure(pod.name, True, pod.pod_reason, message, code, at)
        if code is None:
            return Failure(pod.name, True, pod.container_reason or "Failed", message)
        if contract.retried(code):  # killed by a signal: the OOM killer, SIGTERM, ...
            return Failure(pod.name, True, _signal_reason(pod, code), message, code, at)
        known = contract.EXIT_CLASSES.get(code)  # else a crash: the container's own reason
        reason = known.reason if known else pod.container_reason or "Error"
        return Failure(pod.name, False, reason, message, code, at)
    if pod.deleting:
        # Deleted without the DisruptionTarget condition: by a user, or by a controller
        # that does not say why. As for a Job's podFailurePolicy, only the condition makes
        # a deletion a disruption; this one counts against maxRestarts.
        return Failure(pod.name, True, "PodDeleted", "the pod was deleted while training")
    return None


def _disruption(pod: PodView) -> Failure | None:
    """A pod Kubernetes took away: nothing the training did, and a restart from the last
    checkpoint cures it. Its DisruptionTarget condition says so whatever the pod's state:
    a Running pod is about to be deleted, and a Failed one's exit code 143 is the trainer
    stopping on the SIGTERM that followed. Without the condition, a lost node (phase
    Unknown) or the kubelet's own reason (DISRUPTION_REASONS) says so."""
    if pod.phase == "Succeeded":
        return None
    if pod.disruption:
        d = pod.disruption
        return _disrupted(pod, d.reason or "DisruptionTarget", d.message, d.since)
    if pod.phase == "Unknown":
        return _disrupted(pod, "NodeLost", "the pod's node stopped reporting")
    if pod.phase == "Failed" and pod.pod_reason in DISRUPTION_REASONS:
        return _disrupted(pod, pod.pod_reason, pod.pod_message)
    return None


def _disrupted(pod: PodView, reason: str, why: str,
               since: dt.datetime | None = None) -> Failure:
    """A disruption, at the earlier of when it began and when the container ended, so that
    its peers' failures moments later are its echoes (root_cause). The message is the end
    of the log (the trainer stopping on SIGTERM) and then Kubernetes' why, as its last line."""
    message = _tail("\n".join(t for t in (pod.container_message.strip(), why.strip()) if t))
    at = min((t for t in (since, pod.finished_at) if t is not None), default=None)
    return Failure(pod.name, True, reason, message, pod.exit_code, at, disruption=True)


def root_cause(failures: list[Failure]) -> Failure:
    """The failure that brought the attempt down; the others followed from it.

    Failures without a time (a deleted pod, a lost node) and those within SAME_INCIDENT of
    the earliest one are candidates. Among them a disruption is the cause, then a retryable
    failure, then the first: a rank killed by a signal makes its peers exit 1 at once, and
    the peers of a disrupted pod exit 1 or stop with it (143) moments later, so that the
    whole incident is one disruption.
    """
    times = [f.at for f in failures if f.at is not None]
    first = min(times, default=None)
    candidates = [f for f in failures if first is None or f.at is None
                  or f.at - first <= SAME_INCIDENT]
    # A disruption first, then a retryable failure; of equals, min() keeps the first.
    return min(candidates, key=lambda f: (not f.disruption, not f.retryable))


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
