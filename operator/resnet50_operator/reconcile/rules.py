"""The rules of one reconcile pass, in their order of precedence (RULES, at the end).

Each rule reads the pass (the training, its observed pods, the status so far) and either
decides, returning True (the decision is complete; later rules do not run), or adds to the
decision and returns False to let the next rule speak.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from resnet50_operator import gang, policy, refusals, render
from resnet50_operator.gang import GangView
from resnet50_operator.reconcile.decision import (
    Action,
    CreateObject,
    Decision,
    DeletePod,
    DeleteTraining,
    Event,
    find_condition,
    set_condition,
)
from resnet50_operator.reconcile.failures import Failure, classify, root_cause
from resnet50_operator.reconcile.observe import PodView, parse_time, timestamp
from resnet50_operator.reconcile.progress import hang_deadline, progress_status
from resnet50_operator.settings import OperatorSettings
from resnet50_operator.spec import FailureRecord, NodeCount, ResNet50TrainingStatus, RestartRecord
from resnet50_trainer import contract

# A pod deleted on a node without a kubelet stays Terminating for ever; past its grace
# period and this margin the operator deletes it with grace 0 so the group can restart.
FORCE_DELETE_AFTER = dt.timedelta(seconds=60)
RESTART_HISTORY_KEPT = 10


class Pass:
    """One reconcile pass: what it was given, and the decision so far."""

    def __init__(self, t: render.Training, status: ResNet50TrainingStatus, pods: list[PodView],
                 service_exists: bool, now: dt.datetime, settings: OperatorSettings,
                 generation: int | None = None, progress: dict[str, float] | None = None,
                 read_at: dt.datetime | None = None, gang: GangView | None = None) -> None:
        self.t, self.spec, self.now, self.settings = t, t.spec, now, settings
        self.gang = gang or GangView()
        self.generation, self.service_exists, self.progress = generation, service_exists, progress
        self.read_at = read_at  # when `progress` was read: None if not in this attempt
        self.pods = pods
        self.current = [p for p in pods if p.attempt == status.attempt]
        self.stale = [p for p in pods if p.attempt != status.attempt]
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
        """The new phase, with an Event when it changes."""
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

    def finish(self, succeeded: bool, reason: str, message: str, pods: list[PodView]) -> None:
        """Succeeded or Failed for good; pods still running are stopped, the failed ones kept."""
        self.delete([p for p in pods if p.phase in ("Pending", "Running")])
        self.update(completion_time=timestamp(self.now))
        self.nodes(0)
        self.condition("Running", "False", reason, message)
        if succeeded:
            self.condition("Succeeded", "True", reason, message)
            self.phase("Succeeded", reason, message)
        else:
            self.condition("Failed", "True", reason, message)
            self.phase("Failed", reason, message, warning=True)

    def decision(self) -> Decision:
        return Decision(self.status, self.actions, self.events)


Rule = Callable[[Pass], bool]


def finished(p: Pass) -> bool:
    """Succeeded or Failed: stop pods still running (the operator stopped between writing
    the status and deleting them), and delete the training once its TTL has passed."""
    if p.status.phase not in ("Succeeded", "Failed"):
        return False
    p.delete([pod for pod in p.pods if pod.phase in ("Pending", "Running")])
    ttl = p.spec.run_policy.ttl_seconds_after_finished
    done = parse_time(p.status.completion_time)
    if ttl is not None and done is not None and p.now >= done + dt.timedelta(seconds=ttl):
        p.actions.append(DeleteTraining())
    return True


def allowed(p: Pass) -> bool:
    """The cluster admin's policy (policy.py), checked before the pods of an attempt are
    created: Failed (NotAllowed), naming the setting that would allow it; a spec edit starts
    afresh. The pods of an attempt already created keep running."""
    if p.status.pods_created:
        return False
    refused = policy.violations(p.spec, p.settings)
    if not refused:
        return False
    p.finish(False, "NotAllowed", "; ".join(refused), p.pods)
    return True


def first_seen(p: Pass) -> bool:
    """A new training: its clock starts, and it is Created."""
    if p.status.start_time is None:
        p.update(start_time=timestamp(p.now))
        p.condition("Created", "True", "Created",
                    f"{p.spec.nodes} node(s) x {p.spec.processes} process(es)")
    return False


def suspended(p: Pass) -> bool:
    """spec.runPolicy.suspend: no pods. Resuming is a new attempt, whose pods are then new."""
    if not p.spec.run_policy.suspend:
        return False
    p.delete(p.pods)
    p.nodes(0)
    if p.status.phase != "Suspended":
        p.update(attempt=p.status.attempt + 1, pods_created=False, restart_at=None)
    p.condition("Suspended", "True", "Suspended", "spec.runPolicy.suspend is true")
    p.condition("Running", "False", "Suspended", "spec.runPolicy.suspend is true")
    p.phase("Suspended", "Suspended", "The training is suspended; its pods are deleted")
    return True


def resumed(p: Pass) -> bool:
    """Suspended no longer: Pending again, and (as Kubernetes Jobs do) the deadline clock
    starts again."""
    if p.status.phase == "Suspended":
        p.condition("Suspended", "False", "Resumed", "spec.runPolicy.suspend is false")
        p.phase("Pending", "Resumed", "The training resumes from its last checkpoint")
        p.update(start_time=timestamp(p.now))
    return False


def past_deadline(p: Pass) -> bool:
    """spec.runPolicy.activeDeadlineSeconds since the start (or resumption): Failed."""
    deadline = p.spec.run_policy.active_deadline_seconds
    started = parse_time(p.status.start_time)
    if deadline is None or started is None or p.now < started + dt.timedelta(seconds=deadline):
        return False
    p.finish(False, "DeadlineExceeded",
             f"the training ran longer than activeDeadlineSeconds ({deadline} s)", p.pods)
    return True


def old_attempt_pods(p: Pass) -> bool:
    """The previous attempt's pods go first: the new ones take their names and hostnames."""
    if not p.stale:
        return False
    p.delete(p.stale)
    p.nodes(0)
    return True


def backing_off(p: Pass) -> bool:
    """Between a failure and the restart it scheduled: nothing to do but wait."""
    restart_at = parse_time(p.status.restart_at)
    if restart_at is None or p.now >= restart_at:
        return False
    p.nodes(0)
    return True


def ensure_service(p: Pass) -> bool:
    """The headless Service that gives the pods their DNS names, if it is missing."""
    if not p.service_exists:
        p.actions.append(CreateObject(render.render_service(p.t, p.settings)))
    return False


def record_progress(p: Pass) -> bool:
    """status.training from the master's gauges, when they were read this pass."""
    if p.progress:
        p.update(training=progress_status(p.status.training, p.progress, p.now))
    return False


def failed(p: Pass) -> bool:
    """A pod of the attempt failed, vanished or was disrupted, or the training made no
    progress: restart the whole group (after a back-off, or at once after a disruption),
    or fail for good (a final exit code, no budget left)."""
    failures = [f for f in map(classify, p.current) if f]
    if p.status.pods_created:
        present = {pod.index for pod in p.current}
        failures += [Failure(p.t.pod_name(i), True, "PodDeleted", "the pod disappeared")
                     for i in range(p.size) if i not in present]
    stalled = _stalled(p)
    if stalled and not failures:
        failures.append(stalled)
    if not failures:
        return False
    first = root_cause(failures)
    p.update(last_failure=FailureRecord(pod=first.pod, exit_code=first.exit_code,
                                        reason=first.reason, message=first.message))
    policy, st = p.spec.restart_policy, p.status
    if first.disruption:
        if policy.max_disruptions is not None and st.disruptions >= policy.max_disruptions:
            p.finish(False, "DisruptionLimitExceeded", f"disruption budget of "
                     f"{policy.max_disruptions} (spec.restartPolicy.maxDisruptions) spent; "
                     f"last disruption: {first.describe()}", p.current)
        else:
            _restart(p, first)
    elif not first.retryable:
        p.finish(False, first.reason, f"{first.describe()}; not retried: the same input would "
                 "fail again", p.current)
    elif st.restarts >= policy.max_restarts:
        p.finish(False, "RestartLimitExceeded", f"restart budget of {policy.max_restarts} "
                 f"spent; last failure: {first.describe()}", p.current)
    else:
        _restart(p, first)
    return True


def _restart(p: Pass, cause: Failure) -> None:
    """The next attempt: this one's pods deleted and the cause recorded. A failure counts
    in restarts and waits for a back-off that doubles with each; a disruption counts in
    disruptions and restarts at once (once the old pods are gone), as the cause lay
    outside the training and waiting would not help."""
    policy, st = p.spec.restart_policy, p.status
    # The whole log tail is in lastFailure and the Event; the history keeps one line each.
    record = RestartRecord(attempt=st.attempt, time=timestamp(p.now), reason=cause.reason,
                           message=cause.describe(one_line=True), disruption=cause.disruption)
    p.delete(p.current)
    p.nodes(0)
    p.update(attempt=st.attempt + 1, pods_created=False,
             restart_history=[*st.restart_history, record][-RESTART_HISTORY_KEPT:])
    if cause.disruption:
        limit = f" of {policy.max_disruptions}" if policy.max_disruptions is not None else ""
        message = (f"disruption {st.disruptions + 1}{limit}, not counted against maxRestarts "
                   f"({st.restarts} of {policy.max_restarts} restarts used); restarting at "
                   f"once after {cause.describe()}")
        p.update(disruptions=st.disruptions + 1, restart_at=None)
        event = Event("Normal", "Disrupted", message)
    else:
        backoff = min(policy.backoff_seconds * 2 ** st.restarts, policy.max_backoff_seconds)
        message = (f"restart {st.restarts + 1} of {policy.max_restarts} in {backoff} s after "
                   f"{cause.describe()}")
        p.update(restarts=st.restarts + 1,
                 restart_at=timestamp(p.now + dt.timedelta(seconds=backoff)))
        event = Event("Warning", "Restarting", message)
    p.condition("Restarting", "True", cause.reason, message)
    p.condition("Running", "False", "Restarting", message)
    p.events.append(event)
    p.update(phase="Restarting")


def _stalled(p: Pass) -> Failure | None:
    """Why a running training counts as hung, if it does. Judged only on a read of the
    trainer's progress made after the hang deadline (see hang_deadline), so that a report
    made since the last periodic read is seen before the training is restarted."""
    due = hang_deadline(p.status, p.spec.run_policy)
    if due is None or p.now < due or p.read_at is None or p.read_at < due:
        return None
    training, policy, master = p.status.training, p.spec.run_policy, p.t.pod_name(0)
    if training is None or training.last_progress_time is None:
        return Failure(master, True, "StartupTimeout", (
            f"no training progress within {policy.first_progress_deadline_seconds} s of all "
            "pods running (firstProgressDeadlineSeconds): a rendezvous that never completes "
            "(see the master's log) or a start that hangs"))
    return Failure(master, True, "NoProgress", (
        f"no training progress for {policy.progress_deadline_seconds} s "
        f"(progressDeadlineSeconds); last step {training.global_step} at "
        f"{training.last_progress_time}"))


def succeeded(p: Pass) -> bool:
    """Every pod of the attempt succeeded: the master's final figures, which it left as its
    termination message, and Succeeded."""
    if len(p.current) != p.size or any(pod.phase != "Succeeded" for pod in p.current):
        return False
    final = "".join(pod.container_message for pod in p.current if pod.index == 0)
    p.update(training=progress_status(p.status.training, contract.parse_gauges(final), p.now))
    p.finish(True, "Succeeded", f"all {p.size} node(s) finished training", p.current)
    return True


def topology_kept(p: Pass) -> bool:
    """A new attempt resumes the last one's checkpoints, which the trainer accepts only with
    the same global batch (processes x batch size). With checkpoint storage, an attempt
    whose number of processes changed is held, its pods not created and nothing lost, until
    the spec is set back or an explicit batchSize keeps the global batch."""
    before, now = p.status.world_size, p.spec.world_size
    if p.status.pods_created or p.spec.checkpoint is None or before in (None, now):
        return False
    old_batch, batch = p.status.batch_size, p.spec.training.batch_size
    if batch is not None and (old_batch is None or before * old_batch == now * batch):
        return False  # the user chose a batch size for the new size (the trainer checks it)
    if old_batch is None:
        keep = (f"set spec.training.batchSize so that {now} x batchSize is the global batch "
                f"of the checkpoints ({before} x the batch size of the preset or trainer)")
    elif before * old_batch % now == 0:
        keep = f"set spec.training.batchSize to {before * old_batch // now}"
    else:
        keep = f"no batch size keeps the global batch of {before * old_batch} with {now}"
    message = (f"the training now has {now} processes (spec.nodes x processes per node), its "
               f"checkpoints were written by {before}, and the trainer resumes them only with "
               f"the same global batch: set the nodes back, {keep}, or start afresh with "
               "another spec.checkpoint.subPath; no pod is created until then")
    previous = find_condition(p.status.conditions, "Running")
    if previous is None or (previous.reason, previous.message) != ("TopologyChanged", message):
        p.events.append(Event("Warning", "TopologyChanged", message))
    p.condition("Running", "False", "TopologyChanged", message)
    p.nodes(0)
    return True


# Why gang_ready holds the pods back: it looks again at every sweep.
GANG_PROBLEMS = ("GangSchedulerMissing", "QueueNotFound")


def gang_ready(p: Pass) -> bool:
    """Before the pods of an attempt: the gang scheduler of spec.scheduling.gang must be
    installed (and Kueue's LocalQueue exist), or its pods would wait for ever or, worse,
    start one by one; until then no pod, the reason in the Running condition (a Warning
    Event when it changes), checked again every sweep. The PodGroup (volcano, coscheduling)
    is created before the pods."""
    if p.status.pods_created or p.spec.scheduling.gang.mode == "none":
        return False
    if not p.gang.installed:
        return _hold_pods(p, "GangSchedulerMissing", gang.missing_message(p.t))
    if not p.gang.queue_exists:
        return _hold_pods(p, "QueueNotFound", gang.queue_missing_message(p.t))
    if not p.gang.group_exists and (group := render.render_pod_group(p.t)):
        p.actions.append(CreateObject(group))
    return False


def _hold_pods(p: Pass, reason: str, message: str) -> bool:
    """No pod for now: the Running condition says why, a Warning Event when that changes."""
    previous = find_condition(p.status.conditions, "Running")
    if previous is None or (previous.reason, previous.message) != (reason, message):
        p.events.append(Event("Warning", reason, message))
    p.condition("Running", "False", reason, message)
    p.nodes(0)
    return True


def create_pods(p: Pass) -> bool:
    """The attempt's pods that are missing (all of them, or those an interrupted pass left)."""
    if p.status.pods_created:
        return False
    present = {pod.index for pod in p.current}
    for i in range(p.size):
        if i not in present:
            p.actions.append(CreateObject(render.render_pod(p.t, i, p.status.attempt,
                                                            p.settings)))
    p.update(pods_created=True, restart_at=None, attempt_start_time=timestamp(p.now),
             world_size=p.spec.world_size, batch_size=p.spec.training.batch_size)
    if p.status.phase == "Restarting":
        p.condition("Restarting", "False", "Recreated", f"attempt {p.status.attempt} created")
    p.events.append(Event("Normal", "Created",
                          f"Created {p.size} pod(s) of attempt {p.status.attempt}"))
    p.update(phase="Pending")
    return False


def readiness(p: Pass) -> bool:
    """Running once every node runs; until then Pending with the most telling reason (a
    Warning Event when it changes), and Failed past spec.runPolicy.startupTimeoutSeconds."""
    running = [pod for pod in p.current if pod.phase in ("Running", "Succeeded")]
    p.nodes(len(running))
    if len(running) == p.size:
        p.condition("Running", "True", "AllNodesRunning",
                    f"{p.size} of {p.size} node(s) running")
        p.phase("Running", "Running", f"All {p.size} node(s) are running")
        return True
    reason, message = _why_waiting(p, len(running))
    timeout = p.spec.run_policy.startup_timeout_seconds
    created = parse_time(p.status.attempt_start_time)
    queued = reason == "WaitingForAdmission"  # a queue's wait is no failure to start
    if timeout and created and not queued and p.now >= created + dt.timedelta(seconds=timeout):
        p.finish(False, "StartupTimeout", f"not every pod ran within startupTimeoutSeconds "
                 f"({timeout} s): {message}", p.current)
        return True
    problem = reason != "WaitingForPods"
    previous = find_condition(p.status.conditions, "Running")
    if problem and p.status.phase == "Pending" and (
            previous is None or _SAME_PROBLEM.get(previous.reason, previous.reason) !=
            _SAME_PROBLEM.get(reason, reason)):
        p.events.append(Event("Warning", reason, message))
    p.condition("Running", "False", reason, message)
    p.phase("Pending", reason, message, warning=problem)
    return True


# Reasons a kubelet alternates between for one problem: one Warning Event for both.
_SAME_PROBLEM = {"ImagePullBackOff": "ErrImagePull"}


def _why_waiting(p: Pass, running: int) -> tuple[str, str]:
    """The most telling reason why not every node runs yet: the gang scheduler's (Kueue
    holding the group for quota, Volcano's PodGroup), the scheduler's, then the kubelet's
    (a container's waiting reason such as ErrImagePull, else the pod's newest Warning
    Event, such as FailedMount while its container is being created)."""
    current, total = p.current, p.size
    gated = [pod for pod in current if gang.KUEUE_GATE in pod.gates]
    if gated:
        why = f": {p.gang.pending}" if p.gang.pending else ""
        return "WaitingForAdmission", (
            f"waiting for admission in Kueue LocalQueue {p.spec.scheduling.gang.queue}: "
            f"{len(gated)} of {total} pods gated; none is placed until the whole group "
            f"fits the queue's quota{why}")
    if p.gang.unschedulable:
        reason, message = p.gang.unschedulable
        return reason, f"PodGroup {p.t.name}: {message}"
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


def next_wakeup(t: render.Training, status: ResNet50TrainingStatus) -> dt.datetime | None:
    """When, with nothing else happening, a rule would decide differently: the end of a
    restart back-off (backing_off), the deadline (past_deadline), the TTL (finished), the
    startup timeout (readiness), the hang deadlines (failed), and at once while a refusal
    that may pass or a missing gang scheduler keeps its pods from being created, or a gang
    scheduler holds them. None: only an event can."""
    policy, phase = t.spec.run_policy, status.phase
    times = [parse_time(status.restart_at)]
    started = parse_time(status.start_time)
    if policy.active_deadline_seconds and started and phase not in (
            "Suspended", "Succeeded", "Failed"):
        times.append(started + dt.timedelta(seconds=policy.active_deadline_seconds))
    done = parse_time(status.completion_time)
    if policy.ttl_seconds_after_finished is not None and done and phase in ("Succeeded",
                                                                            "Failed"):
        times.append(done + dt.timedelta(seconds=policy.ttl_seconds_after_finished))
    created = parse_time(status.attempt_start_time)
    if policy.startup_timeout_seconds and created and phase == "Pending":
        times.append(created + dt.timedelta(seconds=policy.startup_timeout_seconds))
    times.append(hang_deadline(status, policy))
    waiting = find_condition(status.conditions, "Running")
    if waiting and waiting.reason in (*refusals.RETRIED, *GANG_PROBLEMS):  # try again now
        times.append(parse_time(waiting.last_transition_time) or dt.datetime.min.replace(
            tzinfo=dt.timezone.utc))
    elif t.spec.scheduling.gang.mode != "none" and phase == "Pending" and status.pods_created:
        # What the gang scheduler says (Kueue's Workload, Volcano's PodGroup) is no event of
        # the training or its pods: read it at every sweep while the pods wait.
        times.append(parse_time(status.attempt_start_time) or dt.datetime.min.replace(
            tzinfo=dt.timezone.utc))
    return min((w for w in times if w is not None), default=None)


# The order of precedence: the first rule that decides ends the pass.
RULES: tuple[Rule, ...] = (
    finished,
    allowed,
    first_seen,
    suspended,
    resumed,
    past_deadline,
    old_attempt_pods,
    backing_off,
    ensure_service,
    record_progress,
    failed,
    succeeded,
    topology_kept,
    gang_ready,
    create_pods,
    readiness,
)
