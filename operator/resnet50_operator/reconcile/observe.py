"""What reconcile knows of the world: pods as PodViews, and time as the API writes it."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

from resnet50_operator import render


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def timestamp(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    """RFC 3339 as the API writes it ("...Z") or as the Python client re-serialises it."""
    if not text:
        return None
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


# Kubernetes' condition on a pod it is taking away, and Kueue's (v0.17) on the pods of a
# workload it stops (reason WorkloadEvictedDueToPreempted on preemption, with its message).
DISRUPTION_CONDITIONS = ("DisruptionTarget", "TerminationTarget")


@dataclass(frozen=True)
class Disruption:
    """A pod's DisruptionTarget condition: Kubernetes says it is taking the pod away (an
    eviction, a preemption, a NoExecute taint, the pod GC, the kubelet, Kueue), before the
    pod's containers get SIGTERM."""

    reason: str  # EvictionByEvictionAPI, PreemptionByScheduler, ..., WorkloadEvictedDueToPreempted
    message: str
    since: dt.datetime | None = None  # lastTransitionTime: when the disruption began


@dataclass(frozen=True)
class PodView:
    """What reconcile needs to know of one pod, read from its labels and status."""

    name: str
    index: int
    attempt: int
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    uid: str = ""
    deleting: bool = False
    deletion_deadline: dt.datetime | None = None  # deletionTimestamp: grace period's end
    exit_code: int | None = None
    finished_at: dt.datetime | None = None  # when the container terminated
    container_reason: str = ""  # terminated or waiting reason (OOMKilled, ErrImagePull, ...)
    container_message: str = ""
    pod_reason: str = ""  # status.reason (Evicted, NodeLost, ...)
    pod_message: str = ""
    unschedulable: str = ""  # the scheduler's message while it cannot place the pod
    ip: str = ""  # status.podIP
    metrics_port: int | None = None  # the trainer container's port named "metrics"
    warning: tuple[str, str] | None = None  # (reason, message) of its latest Warning Event
    disruption: Disruption | None = None  # its DisruptionTarget condition, when True
    gates: tuple[str, ...] = ()  # spec.schedulingGates: what holds it back from scheduling


def observe_pod(pod: dict[str, Any]) -> PodView | None:
    """A PodView of a pod dict as the API returns it; None for pods that are not ours."""
    meta, status = pod.get("metadata", {}), pod.get("status") or {}
    labels = meta.get("labels") or {}
    try:
        index = int(labels[render.NODE_INDEX_LABEL])
        attempt = int(labels[render.ATTEMPT_LABEL])
    except (KeyError, ValueError):
        return None
    exit_code, finished_at, reason, message = None, None, "", ""
    init = status.get("initContainerStatuses") or []
    for cs in [*init, *(status.get("containerStatuses") or [])]:
        state = cs.get("state") or {}
        # An init container that did its job, and the trainer waiting for the init
        # containers, say nothing; an init container's failure or pull error is the pod's.
        if (state.get("terminated", {}).get("exitCode") == 0 and cs in init) or \
                state.get("waiting", {}).get("reason") == "PodInitializing":
            continue
        if "terminated" in state:
            term = state["terminated"]
            exit_code, finished_at = term.get("exitCode"), parse_time(term.get("finishedAt"))
            reason, message = term.get("reason", ""), term.get("message", "")
        elif "waiting" in state:
            reason = state["waiting"].get("reason", "")
            message = state["waiting"].get("message", "")
    unschedulable, disruption = "", None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            unschedulable = cond.get("message", "")
        if cond.get("type") in DISRUPTION_CONDITIONS and cond.get("status") == "True":
            disruption = Disruption(cond.get("reason", ""), cond.get("message", ""),
                                    parse_time(cond.get("lastTransitionTime")))
    return PodView(
        name=meta["name"],
        uid=meta.get("uid", ""),
        index=index,
        attempt=attempt,
        phase=status.get("phase", "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        deletion_deadline=parse_time(meta.get("deletionTimestamp")),
        exit_code=exit_code,
        finished_at=finished_at,
        container_reason=reason,
        container_message=message,
        pod_reason=status.get("reason", ""),
        pod_message=status.get("message", ""),
        unschedulable=unschedulable,
        disruption=disruption,
        gates=tuple(g.get("name", "") for g in (pod.get("spec") or {}).get("schedulingGates")
                    or []),
        ip=status.get("podIP") or "",
        metrics_port=next((port.get("containerPort") for c in (pod.get("spec") or {}).get(
            "containers") or [] for port in c.get("ports") or []
            if port.get("name") == render.METRICS_PORT_NAME), None),
    )


class PodWarnings:
    """The newest Warning Event of each pod (FailedMount, FailedCreatePodSandBox, ...), as
    a watch of Events delivers them: a pending training then costs no read to say why.
    Keyed by the pod's uid, as pods of later attempts reuse names. FailedScheduling is left
    out: the pod's own condition says that, and goes when it binds. At most `limit` pods
    are remembered (the oldest noted are forgotten first): the watch also brings the
    Events of pods that are not ours."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._newest: dict[str, tuple[dt.datetime, str, str]] = {}
        self._lock = threading.Lock()

    def note(self, event: dict[str, Any]) -> None:
        """An Event as the API serves it (camelCase)."""
        involved, meta = event.get("involvedObject") or {}, event.get("metadata") or {}
        at = parse_time(event.get("lastTimestamp") or event.get("eventTime")
                        or meta.get("creationTimestamp"))
        uid, reason = involved.get("uid"), event.get("reason") or "Warning"
        if event.get("type") != "Warning" or involved.get("kind") != "Pod" or not uid or \
                at is None or reason == "FailedScheduling":
            return
        with self._lock:
            if uid in self._newest and self._newest[uid][0] > at:
                return
            self._newest.pop(uid, None)  # noted again: the newest goes last
            self._newest[uid] = (at, reason, event.get("message") or "")
            while len(self._newest) > self.limit:
                del self._newest[next(iter(self._newest))]

    def forget(self, uid: str) -> None:
        with self._lock:
            self._newest.pop(uid, None)

    def newest(self, uid: str) -> tuple[str, str] | None:
        """(reason, message) of the pod's newest Warning Event."""
        with self._lock:
            found = self._newest.get(uid)
        return found[1:] if found else None
