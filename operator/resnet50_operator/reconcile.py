"""Pure decisions: (training, its status, its observed pods, now) -> actions and a new status.

Nothing here talks to Kubernetes. All state lives in the status (attempt, restarts,
whether the attempt's pods were all created) and in pod labels, so an operator that
restarts mid-job decides exactly as the one before it would have.

The order of the checks is the order of precedence:
  finished -> invalid spec -> suspended -> deadline -> old attempt's pods still there ->
  restart back-off -> failures of the current attempt (and no progress) -> success ->
  create what is missing -> phase and readiness (and the startup timeout).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from resnet50_operator import render
from resnet50_operator.settings import OperatorSettings
from resnet50_operator.spec import (
    CheckpointRecord,
    Condition,
    FailureRecord,
    NodeCount,
    ResNet50TrainingStatus,
    RestartRecord,
    TrainingProgress,
)
from resnet50_trainer import contract
from resnet50_trainer.contract import format_duration

# A pod deleted on a node without a kubelet stays Terminating for ever; past its grace
# period and this margin the operator deletes it with grace 0 so the group can restart.
FORCE_DELETE_AFTER = dt.timedelta(seconds=60)
RESTART_HISTORY_KEPT = 10
# When one rank dies, its peers' collectives fail within moments and they exit 1 too:
# failures that end this close to the first one are one event, and a retryable cause wins.
SAME_INCIDENT = dt.timedelta(seconds=5)
MESSAGE_TAIL = 1000  # characters of a termination message kept in status


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


# ------------------------------------------------------------------ observation


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
    unschedulable = ""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            unschedulable = cond.get("message", "")
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
        ip=status.get("podIP") or "",
        metrics_port=next((port.get("containerPort") for c in (pod.get("spec") or {}).get(
            "containers") or [] for port in c.get("ports") or []
            if port.get("name") == render.METRICS_PORT_NAME), None),
    )


# ------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class CreateObject:
    body: dict[str, Any]


@dataclass(frozen=True)
class DeletePod:
    name: str
    force: bool = False  # grace period 0


@dataclass(frozen=True)
class DeleteTraining:
    pass


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


Action = CreateObject | DeletePod | DeleteTraining


@dataclass
class Decision:
    status: ResNet50TrainingStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    pod: str
    retryable: bool
    reason: str
    message: str
    exit_code: int | None = None
    finished_at: dt.datetime | None = None

    def describe(self) -> str:
        code = f" exit code {self.exit_code}" if self.exit_code is not None else ""
        text = f"pod {self.pod}{code} ({self.reason})"
        return f"{text}: {self.message}" if self.message else text


def classify(pod: PodView) -> Failure | None:
    """Whether a pod of the running attempt failed, and whether a restart may help."""
    if pod.phase == "Failed":
        message = _tail(pod.container_message or pod.pod_message)
        code, at = pod.exit_code, pod.finished_at
        if pod.pod_reason:  # Evicted, Preempting, NodeLost, ...: the node's doing, not ours
            return Failure(pod.name, True, pod.pod_reason, message, code, at)
        if code is None:
            return Failure(pod.name, True, pod.container_reason or "Failed", message)
        if contract.retried(code):  # killed by a signal: OOM kill (137), SIGTERM, ...
            return Failure(pod.name, True, pod.container_reason or "Signal", message, code, at)
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


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_TAIL else "..." + text[-MESSAGE_TAIL:]


def progress_status(previous: TrainingProgress | None, values: dict[str, float],
                    now: dt.datetime) -> TrainingProgress | None:
    """status.training from the trainer's gauges (contract.GAUGES); `previous` if they say nothing
    new. lastProgressTime moves only when the step count does."""
    if not values:
        return previous
    prev = previous or TrainingProgress()

    def whole(name: str) -> int | None:
        return int(values[name]) if name in values else None

    def of(done: str, total: str) -> str | None:
        return f"{whole(done)}/{whole(total)}" if done in values and total in values else None

    checkpoint = prev.last_checkpoint
    if "checkpoint_epoch" in values and "checkpoint_timestamp_seconds" in values:
        written = dt.datetime.fromtimestamp(values["checkpoint_timestamp_seconds"],
                                            dt.timezone.utc)
        checkpoint = CheckpointRecord(epoch=whole("checkpoint_epoch"), time=timestamp(written))
    step = whole("global_step")
    moved = step is not None and step != prev.global_step
    new = TrainingProgress(
        epoch=of("epoch", "epochs") or prev.epoch,
        step=of("step", "steps_per_epoch") or prev.step,
        global_step=step if step is not None else prev.global_step,
        loss=_rounded(values.get("loss"), 4, prev.loss),
        lr=_rounded(values.get("learning_rate"), 6, prev.lr),
        images_per_second=whole("images_per_second") if "images_per_second" in values
        else prev.images_per_second,
        top1=_rounded(values.get("top1_accuracy"), 2, prev.top1),
        top5=_rounded(values.get("top5_accuracy"), 2, prev.top5),
        eta=format_duration(values["eta_seconds"]) if "eta_seconds" in values else prev.eta,
        last_checkpoint=checkpoint,
        last_progress_time=timestamp(now) if moved else prev.last_progress_time,
    )
    return new if new != prev else previous


def _rounded(value: float | None, digits: int, previous: float | None) -> float | None:
    return round(value, digits) if value is not None else previous


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str,
                  message: str, now: dt.datetime, generation: int | None) -> list[Condition]:
    """Conditions with `type_` set; its transition time moves only when its status does."""
    previous = find_condition(conditions, type_)
    changed = previous is None or previous.status != status
    new = Condition(
        type=type_, status=status, reason=reason, message=message,
        last_transition_time=timestamp(now) if changed else previous.last_transition_time,
        observed_generation=generation,
    )
    return [new if c.type == type_ else c for c in conditions] if previous else [*conditions, new]


class _Builder:
    """Accumulates one Decision; the steps below read like the rules they implement."""

    def __init__(self, t: render.Training, status: ResNet50TrainingStatus, now: dt.datetime,
                 generation: int | None) -> None:
        self.t, self.now, self.generation = t, now, generation
        # Nodes of the current attempt: an edit of spec.nodes applies from the next attempt.
        self.size = status.nodes.total if status.pods_created and status.nodes.total \
            else t.spec.nodes
        self.status = status.model_copy(update={
            "observed_generation": generation,
            "gpus": self.size * t.spec.gpus_per_node,
        })
        self.actions: list[Action] = []
        self.events: list[Event] = []

    def update(self, **fields: Any) -> None:
        self.status = self.status.model_copy(update=fields)

    def condition(self, type_: str, status: str, reason: str, message: str = "") -> None:
        self.update(conditions=set_condition(self.status.conditions, type_, status, reason,
                                             message, self.now, self.generation))

    def phase(self, phase: str, reason: str, message: str, warning: bool = False) -> None:
        if self.status.phase != phase:
            self.events.append(Event("Warning" if warning else "Normal", reason, message))
        self.update(phase=phase)

    def nodes(self, ready: int) -> None:
        self.update(nodes=NodeCount(ready=ready, total=self.size), ready=f"{ready}/{self.size}")

    def delete(self, pods: list[PodView]) -> None:
        for pod in pods:
            stuck = pod.deleting and pod.deletion_deadline is not None and \
                self.now >= pod.deletion_deadline + FORCE_DELETE_AFTER
            if not pod.deleting or stuck:
                self.actions.append(DeletePod(pod.name, force=stuck))

    def finish(self, succeeded: bool, reason: str, message: str, live: list[PodView]) -> None:
        """Succeeded or Failed for good; pods still running are stopped, the failed ones kept."""
        self.delete([p for p in live if p.phase in ("Pending", "Running")])
        self.update(completion_time=timestamp(self.now))
        self.nodes(0)
        if succeeded:
            self.condition("Running", "False", reason, message)
            self.condition("Succeeded", "True", reason, message)
            self.phase("Succeeded", reason, message)
        else:
            self.condition("Running", "False", reason, message)
            self.condition("Failed", "True", reason, message)
            self.phase("Failed", reason, message, warning=True)

    def decision(self) -> Decision:
        return Decision(self.status, self.actions, self.events)


def reconcile(t: render.Training, status: ResNet50TrainingStatus, pods: list[PodView],
              service_exists: bool, now: dt.datetime, settings: OperatorSettings,
              generation: int | None = None, progress: dict[str, float] | None = None
              ) -> Decision:
    """`progress`: the gauges read from the master's metrics endpoint, when it was read."""
    rejected = find_condition(status.conditions, "Failed")
    if rejected and rejected.reason == "InvalidSpec" and generation != status.observed_generation:
        status = ResNet50TrainingStatus()  # the spec was fixed: start afresh
    b = _Builder(t, status, now, generation)
    spec, st = t.spec, b.status
    current = [p for p in pods if p.attempt == st.attempt]
    stale = [p for p in pods if p.attempt != st.attempt]

    if st.phase in ("Succeeded", "Failed"):
        # Pods still running when the operator stopped between the status and the deletion.
        b.delete([p for p in pods if p.phase in ("Pending", "Running")])
        ttl = spec.run_policy.ttl_seconds_after_finished
        done = parse_time(st.completion_time)
        if ttl is not None and done is not None and now >= done + dt.timedelta(seconds=ttl):
            b.actions.append(DeleteTraining())
        return b.decision()

    if st.start_time is None:
        b.update(start_time=timestamp(now))
        b.condition("Created", "True", "Created", f"{spec.nodes} node(s) x "
                    f"{spec.processes} process(es)")

    if spec.run_policy.suspend:
        b.delete(pods)
        b.nodes(0)
        # A new attempt on resumption: these pods are then stale, and waited for.
        if st.phase != "Suspended":
            b.update(attempt=st.attempt + 1, pods_created=False, restart_at=None)
        b.condition("Suspended", "True", "Suspended", "spec.runPolicy.suspend is true")
        b.condition("Running", "False", "Suspended", "spec.runPolicy.suspend is true")
        b.phase("Suspended", "Suspended", "The training is suspended; its pods are deleted")
        return b.decision()
    if st.phase == "Suspended":
        b.condition("Suspended", "False", "Resumed", "spec.runPolicy.suspend is false")
        b.phase("Pending", "Resumed", "The training resumes from its last checkpoint")
        # Kubernetes Jobs restart the deadline clock on resumption; so do we.
        b.update(start_time=timestamp(now))

    deadline = spec.run_policy.active_deadline_seconds
    started = parse_time(b.status.start_time)
    if deadline is not None and started and now >= started + dt.timedelta(seconds=deadline):
        b.finish(False, "DeadlineExceeded",
                 f"the training ran longer than activeDeadlineSeconds ({deadline} s)", pods)
        return b.decision()

    if stale:  # the previous attempt's pods go first: same names, same hostnames
        b.delete(stale)
        b.nodes(0)
        return b.decision()

    restart_at = parse_time(b.status.restart_at)
    if restart_at is not None and now < restart_at:
        b.nodes(0)
        return b.decision()

    if not service_exists:
        b.actions.append(CreateObject(render.render_service(t, settings)))

    if progress:
        b.update(training=progress_status(b.status.training, progress, now))
    failures = [f for f in map(classify, current) if f]
    if b.status.pods_created:
        present = {p.index for p in current}
        failures += [Failure(t.pod_name(i), True, "PodDeleted", "the pod disappeared")
                     for i in range(b.size) if i not in present]
    stalled = _stalled(b, spec.run_policy.progress_deadline_seconds)
    if stalled and not failures:
        failures.append(Failure(t.pod_name(0), True, "NoProgress", stalled))
    if failures:
        _on_failure(b, failures, current)
        return b.decision()

    if len(current) == b.size and all(p.phase == "Succeeded" for p in current):
        # The master's last figures, which it left as its termination message.
        final = "".join(p.container_message for p in current if p.index == 0)
        b.update(training=progress_status(b.status.training, contract.parse_gauges(final), now))
        b.finish(True, "Succeeded", f"all {b.size} node(s) finished training", current)
        return b.decision()

    if not b.status.pods_created:
        present = {p.index for p in current}
        for i in range(b.size):
            if i not in present:
                b.actions.append(CreateObject(render.render_pod(t, i, b.status.attempt,
                                                                settings)))
        b.update(pods_created=True, restart_at=None, attempt_start_time=timestamp(now))
        if b.status.phase == "Restarting":
            b.condition("Restarting", "False", "Recreated",
                        f"attempt {b.status.attempt} created")
        b.events.append(Event("Normal", "Created", f"Created {b.size} pod(s) of attempt "
                              f"{b.status.attempt}"))
        b.update(phase="Pending")

    running = [p for p in current if p.phase in ("Running", "Succeeded")]
    b.nodes(len(running))
    if len(running) == b.size:
        b.condition("Running", "True", "AllNodesRunning", f"{b.size} of {b.size} "
                    "node(s) running")
        b.phase("Running", "Running", f"All {b.size} node(s) are running")
    else:
        reason, message = _why_waiting(current, b.size, len(running))
        timeout = spec.run_policy.startup_timeout_seconds
        created = parse_time(b.status.attempt_start_time)
        if timeout and created and now >= created + dt.timedelta(seconds=timeout):
            b.finish(False, "StartupTimeout", f"not every pod ran within startupTimeoutSeconds "
                     f"({timeout} s): {message}", current)
            return b.decision()
        problem = reason != "WaitingForPods"
        previous = find_condition(b.status.conditions, "Running")
        if problem and b.status.phase == "Pending" and (
                previous is None or _SAME_PROBLEM.get(previous.reason, previous.reason) !=
                _SAME_PROBLEM.get(reason, reason)):
            b.events.append(Event("Warning", reason, message))
        b.condition("Running", "False", reason, message)
        b.phase("Pending", reason, message, warning=problem)
    return b.decision()


def reject(status: ResNet50TrainingStatus, message: str, now: dt.datetime,
           generation: int | None) -> Decision:
    """A spec the operator cannot run (what the CRD schema could not catch): Failed, saying why.

    A later spec edit that fixes it starts the training afresh (see handlers).
    """
    conditions = set_condition(status.conditions, "Failed", "True", "InvalidSpec", message, now,
                               generation)
    new = status.model_copy(update={"phase": "Failed", "conditions": conditions,
                                    "observed_generation": generation})
    events = [] if status.phase == "Failed" else [Event("Warning", "InvalidSpec", message)]
    return Decision(new, [], events)


def _on_failure(b: _Builder, failures: list[Failure], current: list[PodView]) -> None:
    st, policy = b.status, b.t.spec.restart_policy
    first = root_cause(failures)
    b.update(last_failure=FailureRecord(pod=first.pod, exit_code=first.exit_code,
                                        reason=first.reason, message=first.message))
    if not first.retryable:
        b.finish(False, first.reason, f"{first.describe()}; not retried: the same input would "
                 "fail again", current)
        return
    if st.restarts >= policy.max_restarts:
        b.finish(False, "RestartLimitExceeded", f"restart budget of {policy.max_restarts} "
                 f"spent; last failure: {first.describe()}", current)
        return
    backoff = min(policy.backoff_seconds * 2 ** st.restarts, policy.max_backoff_seconds)
    record = RestartRecord(attempt=st.attempt, time=timestamp(b.now), reason=first.reason,
                           message=first.describe())
    b.delete(current)
    b.nodes(0)
    b.update(
        restarts=st.restarts + 1,
        attempt=st.attempt + 1,
        pods_created=False,
        restart_at=timestamp(b.now + dt.timedelta(seconds=backoff)),
        restart_history=[*st.restart_history, record][-RESTART_HISTORY_KEPT:],
    )
    message = (f"restart {st.restarts + 1} of {policy.max_restarts} in {backoff} s after "
               f"{first.describe()}")
    b.condition("Restarting", "True", first.reason, message)
    b.condition("Running", "False", "Restarting", message)
    b.events.append(Event("Warning", "Restarting", message))
    b.update(phase="Restarting")


# Reasons a kubelet alternates between for one problem: one Warning Event for both.
_SAME_PROBLEM = {"ImagePullBackOff": "ErrImagePull"}


def _why_waiting(current: list[PodView], total: int, running: int) -> tuple[str, str]:
    """The most telling reason why not every node runs yet: the scheduler's, then the
    kubelet's (a container's waiting reason such as ErrImagePull, else the pod's newest
    Warning Event, such as FailedMount while its container is being created)."""
    for pod in current:
        if pod.unschedulable:
            return "Unschedulable", f"pod {pod.name}: {pod.unschedulable}"
    for pod in current:
        if pod.phase == "Pending" and pod.container_reason not in ("", "ContainerCreating"):
            detail = f": {pod.container_message}" if pod.container_message else ""
            return pod.container_reason, f"pod {pod.name}{detail}"
    for pod in current:
        if pod.phase == "Pending" and pod.warning:
            return pod.warning[0], f"pod {pod.name}: {pod.warning[1]}"
    return "WaitingForPods", f"{running} of {total} node(s) running"


def hang_deadline(status: ResNet50TrainingStatus, deadline: int) -> dt.datetime | None:
    """When a running training counts as hung unless its step count moves before; None if
    it is not judged. Only once the trainer has reported progress: a trainer that never
    publishes any (metrics off) is never judged by it."""
    progress = status.training
    running = find_condition(status.conditions, "Running")
    if not deadline or status.phase != "Running" or progress is None or \
            progress.last_progress_time is None or running is None or running.status != "True":
        return None
    since = max(t for t in (parse_time(progress.last_progress_time),
                            parse_time(running.last_transition_time)) if t)
    return since + dt.timedelta(seconds=deadline)


def _stalled(b: _Builder, deadline: int) -> str:
    """Why a running training counts as hung, or "". The caller reads the trainer's progress
    once the hang deadline has passed (see hang_deadline), so a report made since the last
    periodic read is seen before the training is judged."""
    due = hang_deadline(b.status, deadline)
    if due is None or b.now < due:
        return ""
    progress = b.status.training
    assert progress is not None  # hang_deadline judges only trainings that reported
    return (f"no training progress for {deadline} s (progressDeadlineSeconds); last step "
            f"{progress.global_step} at {progress.last_progress_time}")
