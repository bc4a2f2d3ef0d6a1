"""spec.podTemplate: what a training adds to the pods the operator renders, and what stays
the operator's.

A production cluster needs things of the pods that no spec field foresees: the RDMA device
of a fast network (`rdma/hca`, `nvidia.com/hostdev`), a Multus network annotation, the
host network, a sidecar that ships logs, an init container that warms a cache. The
template is a core/v1 PodTemplateSpec, as in a Kubeflow PyTorchJob: its labels,
annotations and pod spec fields are added to the rendered pod, its container named
`trainer` is merged into the trainer container, and its other containers, init containers
and volumes are appended.

What the operator sets stays the operator's: the trainer's command, arguments,
environment and ports, the checkpoint, dataset and /dev/shm mounts, the pods' identity,
restart policy and security context, and what other spec fields already say (scheduling,
the service account, the grace period). `problems` names each such field of a template,
with the spec field that sets it instead; the spec refuses a template that has any.
Pure: dicts in, dicts out.
"""

from __future__ import annotations

import copy
import re
from typing import Any, NamedTuple

TRAINER = "trainer"

# Pod spec fields the operator sets, and who sets them instead.
OWNED_POD_FIELDS = {
    "hostname": "the operator (each pod's DNS name, NAME-INDEX)",
    "subdomain": "the operator (the training's headless Service)",
    "restartPolicy": "the operator (restarts are of the whole group, from checkpoints)",
    "terminationGracePeriodSeconds": "spec.runPolicy.terminationGracePeriodSeconds",
    "securityContext": "the operator (the trainer runs as uid 1000, not as root)",
    "serviceAccountName": "spec.serviceAccountName",
    "serviceAccount": "spec.serviceAccountName",
    "automountServiceAccountToken": "the operator (trainings get no API token)",
    "imagePullSecrets": "spec.imagePullSecrets",
    "nodeSelector": "spec.scheduling.nodeSelector",
    "tolerations": "spec.scheduling.tolerations",
    "affinity": "spec.scheduling.affinity",
    "priorityClassName": "spec.scheduling.priorityClassName",
    "schedulerName": "spec.scheduling.schedulerName",
    "schedulingGates": "the gang scheduler (spec.scheduling.gang)",
    "nodeName": "the scheduler (spec.scheduling.nodeSelector chooses nodes)",
    "enableServiceLinks": "the operator",
}
# Fields of the trainer container the operator sets.
OWNED_TRAINER_FIELDS = {
    "image": "spec.image",
    "imagePullPolicy": "spec.imagePullPolicy",
    "command": "the operator (resnet50-train)",
    "args": "the operator from spec.training (more options: spec.training.extraArgs)",
    "env": "spec.env",
    "ports": "the operator (the rendezvous and metrics ports)",
    "terminationMessagePolicy": "the operator (the trainer's final figures)",
    "terminationMessagePath": "the operator (the trainer's final figures)",
}
OPERATOR_VOLUMES = ("dshm", "data", "checkpoints")
OPERATOR_MOUNTS = {"/dev/shm": "spec.shmSize", "/data": "spec.dataset",
                   "/checkpoints": "spec.checkpoint"}
# Labels and annotations the operator or a gang scheduler sets on the pods.
OWNED_PREFIXES = ("resnet50.dev/", "app.kubernetes.io/", "kueue.x-k8s.io/",
                  "scheduling.x-k8s.io/", "scheduling.k8s.io/")
OWNED_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port")
OWNED_RESOURCES = {"cpu": "spec.resources.cpu", "memory": "spec.resources.memory"}


class Problem(NamedTuple):
    """A field of the template (its path in it) that may not be given, and why."""

    field: str
    why: str

    def __str__(self) -> str:
        return f"spec.podTemplate.{self.field}: {self.why}"


def problems(template: dict[str, Any], gpu_resource: str | None) -> list[Problem]:
    """Each field of `template` that the operator owns, and who sets it instead; empty when
    it may be merged. `gpu_resource`: the GPU resource name the operator requests, None for
    a CPU training."""
    meta, spec = template.get("metadata") or {}, template.get("spec") or {}
    out = [Problem(f"metadata.{kind}[{key}]", "set by the operator or the gang scheduler")
           for kind in ("labels", "annotations") for key in meta.get(kind) or {}
           if key.startswith(OWNED_PREFIXES) or key in OWNED_ANNOTATIONS]
    out += [Problem(f"spec.{key}", f"set by {who}") for key, who in OWNED_POD_FIELDS.items()
            if key in spec]
    for kind in ("containers", "initContainers"):
        names = [c.get("name") for c in spec.get(kind) or []]
        out += [Problem(f"spec.{kind}[{name}]", "a second container of that name")
                for name in sorted({n for n in names if names.count(n) > 1}, key=str)]
    if any(c.get("name") == TRAINER for c in spec.get("initContainers") or []):
        out.append(Problem(f"spec.initContainers[{TRAINER}]",
                           "the name of the trainer container"))
    trainer = next((c for c in spec.get("containers") or [] if c.get("name") == TRAINER), None)
    if trainer is not None:
        out += _trainer_problems(trainer, gpu_resource)
    out += [Problem(f"spec.volumes[{v.get('name')}]", "a volume of the operator")
            for v in spec.get("volumes") or [] if v.get("name") in OPERATOR_VOLUMES]
    return out


def _trainer_problems(trainer: dict[str, Any], gpu_resource: str | None) -> list[Problem]:
    at = f"spec.containers[{TRAINER}]"
    out = [Problem(f"{at}.{key}", f"set by {who}") for key, who in OWNED_TRAINER_FIELDS.items()
           if key in trainer]
    owned = {**OWNED_RESOURCES, **({gpu_resource: "spec.gpusPerNode"} if gpu_resource else {})}
    for kind in ("limits", "requests"):
        out += [Problem(f"{at}.resources.{kind}[{name}]", f"set by {owned[name]}")
                for name in (trainer.get("resources") or {}).get(kind) or {} if name in owned]
    for mount in trainer.get("volumeMounts") or []:
        where = f"{at}.volumeMounts[{mount.get('name')}]"
        if mount.get("name") in OPERATOR_VOLUMES:
            out.append(Problem(where, "a volume of the operator"))
        elif (path := (mount.get("mountPath") or "").rstrip("/")) in OPERATOR_MOUNTS:
            out.append(Problem(where, f"{path} is mounted by the operator "
                                      f"({OPERATOR_MOUNTS[path]})"))
    security = trainer.get("securityContext") or {}
    others = {**security, "capabilities": {k: v for k, v in (security.get(
        "capabilities") or {}).items() if k != "add"}}
    if any(others.values()):
        out.append(Problem(f"{at}.securityContext", "only capabilities.add may be given (e.g. "
                           "IPC_LOCK for RDMA); the rest is the operator's (non-root, no "
                           "privilege escalation)"))
    return out


def apply(pod: dict[str, Any], template: dict[str, Any] | None) -> dict[str, Any]:
    """`pod` with `template` merged in; `problems(template)` must be empty."""
    if not template:
        return pod
    pod = copy.deepcopy(pod)
    meta, spec = template.get("metadata") or {}, copy.deepcopy(template.get("spec") or {})
    for kind in ("labels", "annotations"):
        if meta.get(kind):
            pod["metadata"][kind] = {**pod["metadata"].get(kind, {}), **meta[kind]}
    containers = spec.pop("containers", None) or []
    for c in containers:
        if c.get("name") == TRAINER:
            _merge_trainer(pod["spec"]["containers"][0], c)
        else:
            pod["spec"]["containers"].append(c)
    for kind in ("initContainers", "volumes"):
        if added := spec.pop(kind, None):
            pod["spec"][kind] = [*pod["spec"].get(kind, []), *added]
    pod["spec"].update(spec)  # hostNetwork, dnsPolicy, runtimeClassName, ...: as given
    return pod


def _merge_trainer(trainer: dict[str, Any], given: dict[str, Any]) -> None:
    """Extra resources and mounts, added capabilities; any other field as given."""
    for key, value in given.items():
        if key == "resources":
            for kind, amounts in value.items():
                trainer.setdefault("resources", {}).setdefault(kind, {}).update(amounts)
        elif key == "volumeMounts":
            trainer["volumeMounts"] = [*trainer.get("volumeMounts", []), *value]
        elif key == "securityContext":
            capabilities = trainer.setdefault("securityContext", {}).setdefault(
                "capabilities", {})
            add = (value.get("capabilities") or {}).get("add") or []
            capabilities["add"] = [*capabilities.get("add", []), *add]
        elif key != "name":
            trainer[key] = value


_LISTED = ("containers", "initContainers", "volumes")
_POD_FIELD = re.compile(r"(?<![\w.])spec\.(?:(containers|initContainers|volumes)\[(\d+)\]|"
                        r"(\w+))")


def in_spec_names(message: str, pod: dict[str, Any], template: dict[str, Any] | None) -> str:
    """The apiserver's fields of a rendered pod (spec.containers[1].image) named as the
    user wrote them where they come from spec.podTemplate
    (spec.podTemplate.spec.containers[log-shipper].image)."""
    given = (template or {}).get("spec") or {}
    # The trainer is ours and the template's: its fields keep the pod's names.
    names = {kind: {item.get("name") for item in given.get(kind) or []} - {TRAINER}
             for kind in _LISTED}

    def rename(match: re.Match[str]) -> str:
        kind, index, field = match[1], match[2], match[3]
        if field:
            return f"spec.podTemplate.spec.{field}" if field in given else match[0]
        items = pod["spec"].get(kind) or []
        name = items[int(index)].get("name") if int(index) < len(items) else None
        return f"spec.podTemplate.spec.{kind}[{name}]" if name in names[kind] else match[0]

    return _POD_FIELD.sub(rename, message)
