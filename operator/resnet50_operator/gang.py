"""Gang admission (spec.scheduling.gang): all pods of an attempt start together, or none
does. Half a 16-GPU training holding 8 GPUs while it waits for the other half deadlocks a
shared cluster; a gang scheduler admits the whole group or nothing.

Per mode, what the operator adds to its pods, the group object it owns (created with the
pods, deleted with the training through its owner reference), and the API that must be
served, so that the training can say that the scheduler is missing instead of waiting for
ever. Pure: no client.

  kueue:         a Kueue plain-pod group, one per attempt; Kueue's webhook gates the pods
                 (scheduling gate kueue.x-k8s.io/admission) until the group fits the
                 queue's quota, and marks them TerminationTarget when it preempts them;
  volcano:       a Volcano PodGroup (minMember, minResources, queue) and schedulerName
                 volcano;
  coscheduling:  a scheduler-plugins PodGroup (minMember, scheduleTimeoutSeconds); the pods
                 go to the scheduler of spec.scheduling.schedulerName, or the default one
                 where the plugin replaced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnet50_operator.render import Training

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_SIZE_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"
# The operator, not Kueue, replaces the pods of a group: an evicted or failed group is
# finished and its quota released, and the next attempt queues as a new group. (A group
# Kueue retries would stay queued and, readmitted, hold the quota with no pods.)
KUEUE_RETRIABLE_ANNOTATION = "kueue.x-k8s.io/retriable-in-group"
KUEUE_GATE = "kueue.x-k8s.io/admission"
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"
VOLCANO_SCHEDULER = "volcano"
COSCHEDULING_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"


@dataclass(frozen=True)
class GangApi:
    """The API a mode needs: the group object's (volcano, coscheduling), or the queue's."""

    product: str  # as the condition names it
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


APIS = {
    "kueue": GangApi("Kueue", "kueue.x-k8s.io", "v1beta2", "localqueues", "LocalQueue"),
    "volcano": GangApi("Volcano", "scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup"),
    "coscheduling": GangApi("the coscheduling plugin (scheduler-plugins)", "scheduling.x-k8s.io",
                            "v1alpha1", "podgroups", "PodGroup"),
}


# Where Kueue says why it holds a group (kueue_pending).
KUEUE_WORKLOADS = GangApi("Kueue", "kueue.x-k8s.io", "v1beta2", "workloads", "Workload")


def mode(t: Training) -> str:
    return t.spec.scheduling.gang.mode


def kueue_group_name(t: Training, attempt: int) -> str:
    """One Kueue workload per attempt (Kueue names the Workload after the group): the pods
    of a new attempt are a new group, queued again, while the old one's workload ends with
    its pods."""
    return f"{t.name}-attempt-{attempt}"


def pod_labels(t: Training, attempt: int) -> dict[str, str]:
    gang = t.spec.scheduling.gang
    if gang.mode == "kueue":
        return {KUEUE_QUEUE_LABEL: gang.queue or "",
                KUEUE_GROUP_LABEL: kueue_group_name(t, attempt)}
    if gang.mode == "coscheduling":
        return {COSCHEDULING_GROUP_LABEL: t.name}
    return {}


def pod_annotations(t: Training, size: int) -> dict[str, str]:
    """`size`: the pods of the attempt."""
    if mode(t) == "kueue":
        return {KUEUE_GROUP_SIZE_ANNOTATION: str(size), KUEUE_RETRIABLE_ANNOTATION: "false"}
    if mode(t) == "volcano":
        return {VOLCANO_GROUP_ANNOTATION: t.name}
    return {}


def scheduler_name(t: Training) -> str | None:
    """The pods' schedulerName: the user's, else Volcano's for its mode."""
    given = t.spec.scheduling.scheduler_name
    return given or (VOLCANO_SCHEDULER if mode(t) == "volcano" else None)


def group_resources(t: Training, size: int) -> dict[str, str]:
    """What the whole group requests: the scheduler admits it only when all of it fits."""
    spec, out = t.spec, {}
    if spec.gpus_per_node:
        out[spec.gpu_resource_name] = str(spec.gpus_per_node * size)
    return out


def pod_group(t: Training, size: int, owner: dict[str, Any]) -> dict[str, Any] | None:
    """The PodGroup of a volcano or coscheduling training (named after it, one for all its
    attempts); None for the other modes."""
    gang = t.spec.scheduling.gang
    if gang.mode not in ("volcano", "coscheduling"):
        return None
    api = APIS[gang.mode]
    spec: dict[str, Any] = {"minMember": size}
    if resources := group_resources(t, size):
        spec["minResources"] = resources
    if gang.mode == "volcano":
        if gang.queue:
            spec["queue"] = gang.queue
        if t.spec.scheduling.priority_class_name:
            spec["priorityClassName"] = t.spec.scheduling.priority_class_name
    elif gang.schedule_timeout_seconds is not None:
        spec["scheduleTimeoutSeconds"] = gang.schedule_timeout_seconds
    return {"apiVersion": api.api_version, "kind": api.kind,
            "metadata": {"name": t.name, "namespace": t.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "resnet50-operator"},
                         "ownerReferences": [owner]},
            "spec": spec}


@dataclass(frozen=True)
class GangView:
    """What reconcile knows of the gang scheduler, read before the pods are created and
    while they wait: whether its API is served, whether the queue (kueue) or the PodGroup
    exists, the PodGroup's own reason why it cannot be scheduled (volcano), and why Kueue
    has not admitted the attempt's Workload."""

    installed: bool = True
    queue_exists: bool = True
    group_exists: bool = True
    unschedulable: tuple[str, str] | None = None  # (reason, message)
    pending: str = ""  # Kueue's message, e.g. "insufficient unused quota for nvidia.com/gpu"


def kueue_pending(workload: dict[str, Any]) -> str:
    """Why Kueue has not reserved quota for a Workload: its QuotaReserved condition's
    message while False ("couldn't assign flavors to pod set ...: insufficient unused quota
    for nvidia.com/gpu in flavor default-flavor, 16 more needed")."""
    for cond in (workload.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "QuotaReserved" and cond.get("status") == "False":
            return cond.get("message", "")
    return ""


def unschedulable(group: dict[str, Any]) -> tuple[str, str] | None:
    """A PodGroup's Unschedulable condition, as Volcano writes it (reason
    NotEnoughResources, "2/2 tasks in gang unschedulable: ...")."""
    for cond in (group.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Unschedulable" and cond.get("status") == "True":
            return cond.get("reason") or "Unschedulable", cond.get("message", "")
    return None


def missing_message(t: Training) -> str:
    api = APIS[mode(t)]
    return (f"gang mode {mode(t)}, but {api.product} is not installed: this cluster serves "
            f"no {api.api_version} {api.plural}; install it, or set "
            "spec.scheduling.gang.mode to another mode or none")


def queue_missing_message(t: Training) -> str:
    return (f"gang mode kueue, but the namespace {t.namespace} has no LocalQueue "
            f"{t.spec.scheduling.gang.queue}: Kueue would hold the pods for ever; create it "
            "(or ask the cluster admin for a queue), or set spec.scheduling.gang.queue")
