"""Pure decisions: (training, its status, its observed pods, now) -> actions and a new status.

Nothing here talks to Kubernetes. All state lives in the status (attempt, restarts,
whether the attempt's pods were all created) and in pod labels, so an operator that
restarts mid-job decides exactly as the one before it would have.

One pass runs the rules of rules.RULES in their order of precedence:
  finished -> (invalid spec: reject(), before reconcile) -> not allowed by the admin's
  policy -> suspended -> deadline -> old attempt's pods still there -> restart back-off ->
  failures of the current attempt (and no progress) -> success -> a changed topology that
  its checkpoints refuse -> a gang scheduler that is missing -> create what is missing ->
  phase and readiness (and the startup timeout).
"""

from __future__ import annotations

import datetime as dt

from resnet50_operator import render
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
from resnet50_operator.reconcile.observe import (
    PodView,
    PodWarnings,
    now_utc,
    observe_pod,
    parse_time,
    timestamp,
)
from resnet50_operator.reconcile.progress import hang_deadline, progress_status
from resnet50_operator.reconcile.rules import RULES, Pass, next_wakeup
from resnet50_operator.settings import OperatorSettings
from resnet50_operator.spec import ResNet50TrainingStatus

__all__ = [
    "Action", "CreateObject", "Decision", "DeletePod", "DeleteTraining", "Event", "Failure",
    "GangView",
    "PodView", "PodWarnings", "classify", "find_condition", "hang_deadline", "now_utc",
    "next_wakeup", "observe_pod", "parse_time", "progress_status", "reconcile", "refused",
    "reject", "root_cause", "set_condition", "timestamp",
]


# Failed reasons that a spec edit may cure: the training then starts afresh.
REFUSED_SPECS = ("InvalidSpec", "NotAllowed")


def reconcile(t: render.Training, status: ResNet50TrainingStatus, pods: list[PodView],
              service_exists: bool, now: dt.datetime, settings: OperatorSettings,
              generation: int | None = None, progress: dict[str, float] | None = None,
              read_at: dt.datetime | None = None, gang: GangView | None = None) -> Decision:
    """`progress`: the gauges last read from the master's metrics endpoint in this attempt
    (empty if the pod answered without them), and `read_at` when: a training is judged hung
    only on a read made after its deadline. `gang`: the gang scheduler as observed (for
    spec.scheduling.gang)."""
    rejected = find_condition(status.conditions, "Failed")
    if rejected and rejected.reason in REFUSED_SPECS and \
            generation != status.observed_generation:
        status = ResNet50TrainingStatus()  # the spec was fixed: start afresh
    p = Pass(t, status, pods, service_exists, now, settings, generation, progress, read_at,
             gang)
    for rule in RULES:
        if rule(p):
            break
    return p.decision()


def reject(status: ResNet50TrainingStatus, message: str, now: dt.datetime,
           generation: int | None) -> Decision:
    """A spec the operator cannot run (what the CRD schema could not catch): Failed, saying why.

    A later spec edit that fixes it starts the training afresh (see reconcile).
    """
    conditions = set_condition(status.conditions, "Failed", "True", "InvalidSpec", message, now,
                               generation)
    # A Running condition left from before (WaitingForPods, say) would contradict it.
    if find_condition(conditions, "Running"):
        conditions = set_condition(conditions, "Running", "False", "InvalidSpec", message, now,
                                   generation)
    new = status.model_copy(update={"phase": "Failed", "conditions": conditions,
                                    "observed_generation": generation})
    events = [] if status.phase == "Failed" else [Event("Warning", "InvalidSpec", message)]
    return Decision(new, [], events)


def refused(status: ResNet50TrainingStatus, reason: str, message: str, now: dt.datetime,
            generation: int | None) -> Decision:
    """The apiserver refused a pod or the Service for a reason that may pass (refusals.py):
    the status as it was, so nothing counts as created, with the Running condition saying
    why, and a Warning Event when that changes. The next pass tries again."""
    previous = find_condition(status.conditions, "Running")
    conditions = set_condition(status.conditions, "Running", "False", reason, message, now,
                               generation)
    new = status.model_copy(update={"conditions": conditions, "observed_generation": generation})
    told = previous is not None and (previous.reason, previous.message) == (reason, message)
    return Decision(new, [], [] if told else [Event("Warning", reason, message)])
