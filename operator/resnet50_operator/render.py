"""Spec + identity -> the objects of a training: one headless Service, one Pod per node.

Each concern is one small function (labels, trainer arguments, rendezvous environment,
volumes, resources, scheduling, security); pod_values() gathers them, in that order, and
the jinja2 template emits the Pod. The output is parsed back from YAML, so a template
mistake fails here, naming the object, rather than at the apiserver.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2
import pydantic
import yaml

from resnet50_operator import gang, overrides
from resnet50_operator import spec as s
from resnet50_operator.settings import OperatorSettings
from resnet50_trainer.contract import EXIT_ACCESS, Flag

DATA_MOUNT = "/data"
METRICS_PORT_NAME = "metrics"
TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
CHECKPOINT_MOUNT = "/checkpoints"
LABEL_PREFIX = "resnet50.dev"
TRAINING_LABEL = f"{LABEL_PREFIX}/training"
NODE_INDEX_LABEL = f"{LABEL_PREFIX}/node-index"
ATTEMPT_LABEL = f"{LABEL_PREFIX}/attempt"
# Defaults that make a dead peer an error instead of a silent hang; spec.env wins.
NCCL_DEFAULTS = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_NCCL_ENABLE_MONITORING": "1",
    "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "600",
    "NCCL_DEBUG": "WARN",
}
TRAINER_UID = 1000  # the trainer image's non-root user
HOSTNAME_LABEL = "kubernetes.io/hostname"  # every node's own name: the domain of one node
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


@dataclass(frozen=True)
class Training:
    """The identity of one ResNet50Training and its parsed spec."""

    name: str
    namespace: str
    uid: str
    spec: s.ResNet50TrainingSpec

    @property
    def service(self) -> str:
        return self.name

    def pod_name(self, index: int) -> str:
        return f"{self.name}-{index}"

    @property
    def master_addr(self) -> str:
        """Stable across attempts: hostname.subdomain of pod 0 in the namespace."""
        return f"{self.pod_name(0)}.{self.service}.{self.namespace}.svc"


def parse_training(body: dict[str, Any]) -> Training:
    """A Training from a ResNet50Training object; ValueError names every bad field."""
    meta = body.get("metadata", {})
    name = meta.get("name", "")
    if len(name) > s.MAX_NAME_LENGTH:
        raise ValueError(f"metadata.name: {s.NAME_LENGTH_LIMIT}; it has {len(name)}")
    try:
        spec = s.ResNet50TrainingSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as exc:
        raise ValueError("; ".join(_describe(e) for e in exc.errors())) from None
    return Training(name=name, namespace=meta.get("namespace", ""), uid=meta.get("uid", ""),
                    spec=spec)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in ("spec", *error["loc"]))
    got = f" (got {error['input']!r})" if error["type"] not in ("missing",) and \
        not isinstance(error["input"], dict) else ""
    return f"{where}: {error['msg'].removeprefix('Value error, ')}{got}"


def owner_reference(t: Training) -> dict[str, Any]:
    return {"apiVersion": f"{s.GROUP}/{s.VERSION}", "kind": s.KIND, "name": t.name,
            "uid": t.uid, "controller": True, "blockOwnerDeletion": True}


def selector_labels(t: Training) -> dict[str, str]:
    return {TRAINING_LABEL: t.name}


def labels(t: Training, index: int | None = None, attempt: int | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "resnet50-training",
        "app.kubernetes.io/instance": t.name,
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": "resnet50-operator",
        **selector_labels(t),
    }
    if index is not None:
        out[NODE_INDEX_LABEL] = str(index)
    if attempt is not None:
        out[ATTEMPT_LABEL] = str(attempt)
    return out


def trainer_args(t: Training, settings: OperatorSettings) -> list[str]:
    """resnet50-train options; the launch topology comes from the PET_* environment."""
    spec, opts = t.spec, t.spec.training
    # Rank 0 publishes its progress and leaves its final figures as termination message.
    args = [Flag.METRICS_PORT, str(ports(t, settings).metrics), Flag.TERMINATION_LOG,
            TERMINATION_LOG]
    if opts.preset:
        args += [Flag.PRESET, opts.preset]
    if spec.dataset.synthetic:
        args += [Flag.SYNTHETIC]
    else:
        args += [Flag.DATA_PATH, _join(DATA_MOUNT, spec.dataset.sub_path)]
    args += [Flag.OUTPUT_DIR, checkpoint_dir(t)]
    if spec.checkpoint and spec.checkpoint.interval_minutes is not None:
        args += [Flag.CHECKPOINT_INTERVAL, str(spec.checkpoint.interval_minutes)]
    if spec.gpus_per_node == 0:
        args += [Flag.DEVICE, "cpu"]
    options = {
        Flag.PRECISION: opts.precision,
        Flag.EPOCHS: opts.epochs,
        Flag.BATCH_SIZE: opts.batch_size,
        Flag.LR: opts.lr,
        Flag.WORKERS: opts.workers,
        Flag.PRINT_FREQ: opts.print_freq,
    }
    for flag, value in options.items():
        if value is not None:
            args += [flag, str(value)]
    if opts.channels_last is not None:
        args.append(Flag.CHANNELS_LAST if opts.channels_last else Flag.NO_CHANNELS_LAST)
    return args + list(opts.extra_args)


def checkpoint_dir(t: Training) -> str:
    """The trainer's --output-dir: the volume's subPath, else a directory named after it."""
    return _join(CHECKPOINT_MOUNT, (t.spec.checkpoint.sub_path if t.spec.checkpoint else "")
                 or t.name)


def _join(root: str, sub: str) -> str:
    sub = sub.strip("/")
    return f"{root}/{sub}" if sub else root


def environment(t: Training, index: int, settings: OperatorSettings) -> list[dict[str, Any]]:
    """PyTorchJob-style rendezvous variables, NCCL defaults, then the user's spec.env."""
    port = str(ports(t, settings).rendezvous)
    rendezvous = {
        "MASTER_ADDR": t.master_addr,
        "MASTER_PORT": port,
        "WORLD_SIZE": str(t.spec.world_size),
        "RANK": str(index),  # the node's rank, as PyTorchJob sets it; torchrun sets each worker's
        "PET_NNODES": str(t.spec.nodes),
        "PET_NPROC_PER_NODE": str(t.spec.processes),
        "PET_NODE_RANK": str(index),
        "PET_MASTER_ADDR": t.master_addr,
        "PET_MASTER_PORT": port,
        "PYTHONUNBUFFERED": "1",
    }
    env: dict[str, dict[str, Any]] = {k: {"name": k, "value": v} for k, v in rendezvous.items()}
    for key, value in NCCL_DEFAULTS.items():
        env[key] = {"name": key, "value": value}
    for field, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        env[field] = {"name": field, "valueFrom": {"fieldRef": {"fieldPath": path}}}
    for var in t.spec.env:
        env[var.name] = var.model_dump(by_alias=True, exclude_none=True)
    return list(env.values())


def volumes(t: Training) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = t.spec
    vols: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    data = spec.dataset
    if not data.synthetic:
        vols.append({"name": "data", **_source(data, read_only=True)})
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
    if spec.checkpoint:
        vols.append({"name": "checkpoints", **_source(spec.checkpoint, read_only=False)})
    else:
        vols.append({"name": "checkpoints", "emptyDir": {}})
    mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT})
    return vols, mounts


def _source(source: s.DatasetSpec | s.CheckpointSpec, read_only: bool) -> dict[str, Any]:
    if source.persistent_volume_claim:
        return {"persistentVolumeClaim": {"claimName": source.persistent_volume_claim.claim_name,
                                          "readOnly": read_only}}
    if source.host_path:
        return {"hostPath": {"path": source.host_path.path,
                             "type": "Directory" if read_only else "DirectoryOrCreate"}}
    assert isinstance(source, s.DatasetSpec) and source.nfs  # the spec validator ensures it
    return {"nfs": {"server": source.nfs.server, "path": source.nfs.path, "readOnly": True}}


def resources(t: Training) -> dict[str, Any]:
    """Requests equal limits: GPUs must, and equal cpu/memory give the pod Guaranteed QoS."""
    limits: dict[str, Any] = {}
    if t.spec.gpus_per_node:
        limits[t.spec.gpu_resource_name] = str(t.spec.gpus_per_node)  # a quantity
    if t.spec.resources.cpu:
        limits["cpu"] = t.spec.resources.cpu
    if t.spec.resources.memory:
        limits["memory"] = t.spec.resources.memory
    return {"limits": limits, "requests": dict(limits)} if limits else {}


# Its failure is the trainer's own for a path it may not read or write (AccessDenied).
PREPARE_CHECKPOINT_DIR = (
    'mkdir -p "$1" && chown "$2:$2" "$1" && exit 0; '
    'echo "cannot create $1 for uid $2 on the checkpoint hostPath (as root, with only '
    f'CAP_CHOWN): make the node\'s directory writable by root or by uid $2" >&2; exit {EXIT_ACCESS}'
)


def init_containers(t: Training, image: str) -> list[dict[str, Any]]:
    """For a hostPath checkpoint volume, one root container that creates the training's
    directory and gives it to the trainer's uid: the kubelet creates a DirectoryOrCreate
    path as root, mode 0755, and applies no fsGroup to hostPath volumes, so the non-root
    trainer could not write there. It may only chown (CAP_CHOWN, every other capability
    dropped), touches nothing but that directory, and runs the trainer's own image.
    A hostPath already needs a namespace that allows privileged pods (Pod Security's
    baseline forbids hostPath), so this root container asks for nothing more."""
    if not (t.spec.checkpoint and t.spec.checkpoint.host_path):
        return []
    cpu_memory = {k: v for k, v in resources(t).get("limits", {}).items()
                  if k in ("cpu", "memory")}  # the pod keeps its Guaranteed QoS
    return [{
        "name": "checkpoint-dir",
        "image": image,
        "imagePullPolicy": t.spec.image_pull_policy,
        "command": ["sh", "-c", PREPARE_CHECKPOINT_DIR, "sh", checkpoint_dir(t),
                    str(TRAINER_UID)],
        "resources": {"limits": cpu_memory, "requests": dict(cpu_memory)} if cpu_memory else {},
        "volumeMounts": [{"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
    }]


def node_selector(t: Training) -> dict[str, str]:
    """The user's nodeSelector plus placement.gpuProduct's GPU model (the spec refuses the
    two when they name different models)."""
    selector = dict(t.spec.scheduling.node_selector)
    if product := t.spec.scheduling.placement.gpu_product:
        selector[s.GPU_PRODUCT_LABEL] = product
    return selector


def placement_terms(t: Training) -> dict[str, list[dict[str, Any]]]:
    """spec.scheduling.placement as required pod (anti-)affinity terms over this training's
    pods, by the affinity they belong to. Required, not preferred: each pod is meant to be
    a whole machine (two on one node would share its network and GPU links), and a pod
    outside the domain would talk to the others over a slower part of the network.

    podAffinity holds for the first pod too: when no pod matches a term yet, the scheduler
    admits a pod that matches all its own terms (InterPodAffinity's self-affinity case),
    on any node that has the topologyKey label; the others then follow it."""
    own_pods = {"labelSelector": {"matchLabels": selector_labels(t)}}
    terms: dict[str, list[dict[str, Any]]] = {}
    if t.spec.one_pod_per_node:
        terms["podAntiAffinity"] = [{**own_pods, "topologyKey": HOSTNAME_LABEL}]
    if key := t.spec.scheduling.placement.topology_key:
        terms["podAffinity"] = [{**own_pods, "topologyKey": key}]
    return terms


def affinity(t: Training) -> dict[str, Any] | None:
    """The user's affinity with placement's terms appended to its required lists: both
    hold. A section of the wrong type stays as given, for the Kubernetes client to refuse
    with its name (InvalidSpec), rather than be silently replaced."""
    merged = copy.deepcopy(t.spec.scheduling.affinity) or {}
    for kind, terms in placement_terms(t).items():
        if merged.get(kind) is None:
            merged[kind] = {}
        section = merged[kind]
        if isinstance(section, dict):
            if section.get(REQUIRED) is None:
                section[REQUIRED] = []
            if isinstance(section[REQUIRED], list):
                section[REQUIRED].extend(terms)
    return merged or None


def scheduling(t: Training) -> dict[str, Any]:
    sched = t.spec.scheduling
    fields = {
        "nodeSelector": node_selector(t) or None,
        "tolerations": sched.tolerations or None,
        "affinity": affinity(t),
        "priorityClassName": sched.priority_class_name,
        "schedulerName": gang.scheduler_name(t),
    }
    return {k: v for k, v in fields.items() if v is not None}


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class Ports:
    rendezvous: int
    metrics: int


HOST_PORTS = range(20000, 30000, 2)  # pairs: rendezvous, metrics


def ports(t: Training, settings: OperatorSettings) -> Ports:
    """The operator's ports; on the host network (spec.podTemplate hostNetwork) a pair
    chosen from the training's uid, stable across attempts: pods of trainings sharing a
    node then share its ports, and two trainings on the same pair (a chance of one in
    5000) would refuse each other's rendezvous, which onePodPerNode makes rarer still."""
    if not t.spec.host_network:
        return Ports(settings.rendezvous_port, settings.metrics_port)
    base = HOST_PORTS[int(hashlib.sha256(t.uid.encode()).hexdigest(), 16) % len(HOST_PORTS)]
    return Ports(base, base + 1)


def pod_annotations(t: Training, index: int, settings: OperatorSettings) -> dict[str, str]:
    """The gang scheduler's, and for a Prometheus that discovers pods by annotation, where
    rank 0 (global rank 0 runs in the first pod) serves the progress."""
    out = gang.pod_annotations(t, t.spec.nodes)
    if index == 0:
        out.update({"prometheus.io/scrape": "true",
                    "prometheus.io/port": str(ports(t, settings).metrics)})
    return out


def pod_values(t: Training, index: int, attempt: int, settings: OperatorSettings) -> dict:
    vols, mounts = volumes(t)
    image = t.spec.image or settings.trainer_image
    return {
        "name": t.pod_name(index),
        "namespace": t.namespace,
        "service": t.service,
        "labels": {**labels(t, index, attempt), **gang.pod_labels(t, attempt)},
        "annotations": pod_annotations(t, index, settings),
        "owner": owner_reference(t),
        "args": trainer_args(t, settings),
        "metrics_port": ports(t, settings).metrics,
        "env": environment(t, index, settings),
        "rendezvous_port": ports(t, settings).rendezvous,
        "volumes": vols,
        "mounts": mounts,
        "resources": resources(t),
        "scheduling": scheduling(t),
        "pod_security": pod_security(),
        "container_security": container_security(),
        "image": image,
        "init_containers": init_containers(t, image),
        "image_pull_policy": t.spec.image_pull_policy,
        "service_account": t.spec.service_account_name,
        "image_pull_secrets": [{"name": r.name} for r in t.spec.image_pull_secrets],
        # On SIGTERM (a drain, an eviction, a restart) the trainer finishes its report
        # window and writes a checkpoint before it exits: this long at most.
        "termination_grace_seconds": t.spec.run_policy.termination_grace_period_seconds,
    }


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("resnet50_operator", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _emit(template: str, values: dict[str, Any]) -> dict[str, Any]:
    text = _templates().get_template(template).render(**values)
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{template} for {values.get('name')} is not valid YAML: {exc}") from exc
    if not isinstance(obj, dict) or "kind" not in obj:
        raise ValueError(f"{template} for {values.get('name')} did not give an object")
    return obj


def render_pod(t: Training, index: int, attempt: int, settings: OperatorSettings) -> dict:
    """The pod, with spec.podTemplate merged in (overrides.py)."""
    pod = _emit("pod.yaml.j2", pod_values(t, index, attempt, settings))
    template = t.spec.pod_template
    pod = overrides.apply(pod, template and template.model_dump(by_alias=True))
    if t.spec.host_network:  # the pod names of the rendezvous resolve through cluster DNS
        pod["spec"].setdefault("dnsPolicy", "ClusterFirstWithHostNet")
    return pod


def render_pod_group(t: Training) -> dict[str, Any] | None:
    """The gang scheduler's PodGroup (gang.pod_group), None when the mode has none."""
    return gang.pod_group(t, t.spec.nodes, owner_reference(t))


def render_service(t: Training, settings: OperatorSettings) -> dict[str, Any]:
    return _emit("service.yaml.j2", {
        "name": t.service,
        "namespace": t.namespace,
        "labels": labels(t),
        "owner": owner_reference(t),
        "selector": selector_labels(t),
        "rendezvous_port": ports(t, settings).rendezvous,
    })


def render_all(t: Training, attempt: int, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Every object of one attempt: the Service, then the pods in node order."""
    return [render_service(t, settings)] + [
        render_pod(t, i, attempt, settings) for i in range(t.spec.nodes)
    ]
