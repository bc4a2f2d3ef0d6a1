"""The ResNet50Training resource: the one definition of its fields, defaults and limits.

The CRD's openAPIV3Schema (manifests/crd/) is generated from these models by crd.py,
and a test keeps the committed file equal to the generated one. Field names are the
camelCase names users write in YAML; the Python attributes are their snake_case twins.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, ValidationError

from resnet50_operator import overrides
from resnet50_trainer.contract import OPERATOR_FLAGS, PRECISIONS, PRESET_NAMES, Flag

GROUP = "resnet50.dev"
VERSION = "v1alpha1"
KIND = "ResNet50Training"
PLURAL = "resnet50trainings"
SINGULAR = "resnet50training"
SHORT_NAMES = ["r50t"]
# Pod names are "<name>-<node index>" and serve as DNS hostnames: at most 63 characters.
MAX_NAME_LENGTH = 56
NAME_LENGTH_LIMIT = f"at most {MAX_NAME_LENGTH} characters (pod names <name>-<index> are " \
    "DNS labels)"
# A Kubernetes resource quantity ("32", "500m", "256Gi", "1e3"), as the API's own schema has it.
QUANTITY = (r"^(?P<sign>\+|-)?(?P<number>([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|"
            r"[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
# Upper bound of every duration field: ten years, far below what datetime arithmetic allows.
MAX_SECONDS = 10 * 365 * 24 * 3600
# The rendezvous the operator sets in every pod (render.environment): not the user's to set.
OPERATOR_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_NNODES",
                "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)


# Rules that types and bounds cannot say. Each is written once here, as a CEL rule of the
# CRD (x-kubernetes-validations: the apiserver answers `kubectl apply` with the message) and
# as the same check in the models (the operator's answer to what an older CRD let through),
# with the same message; tests/bad_specs.py has a bad input for each, sent to both.
MSG_DATASET_SOURCE = "set exactly one of persistentVolumeClaim, hostPath and nfs, or " \
    "synthetic: true"
MSG_SYNTHETIC_TAKES_NO_VOLUME = "synthetic data takes no volume: remove " \
    "persistentVolumeClaim, hostPath and nfs, or set synthetic: false"
MSG_CHECKPOINT_SOURCE = "set exactly one of persistentVolumeClaim and hostPath"
MSG_SUB_PATH = "must stay inside the volume: a relative path, with no leading '/' and no " \
    "'..' component"
MSG_IMAGE = "must be an image reference such as registry.example.com/team/trainer:1.0"
# Only the fallback: the rule's messageExpression names the option (OPERATOR_OPTION_MESSAGES).
MSG_OPERATOR_OPTION = "an option the operator sets: set its spec field instead"
MSG_QUANTITY = "must be a positive quantity such as 32, 500m or 256Gi"
MSG_ENV_NAME = "must be printable ASCII characters other than '='"
MSG_ENV_RESERVED = " is set by the operator (the rendezvous of the pods)"  # after the name
MSG_ENV_VALUE = "set value or valueFrom, not both"
MSG_ENV_UNIQUE = "each variable may be set only once"
MSG_PROCESSES = "processesPerNode is for CPU trainings (gpusPerNode: 0); with GPUs each pod " \
    "runs one process per GPU"
MSG_BACKOFF = "must be at least backoffSeconds, the first wait"
MSG_GANG_QUEUE = "gang mode kueue needs queue: the name of a LocalQueue in the training's " \
    "namespace"
MSG_GANG_TIMEOUT = "scheduleTimeoutSeconds is for gang mode coscheduling"
MSG_GPU_PRODUCT_ON_CPU = "gpuProduct selects nodes by their GPU model: it is for GPU " \
    "trainings (gpusPerNode above 0)"
MSG_GPU_PRODUCT_SELECTOR = "gpuProduct differs from nodeSelector's nvidia.com/gpu.product: " \
    "set the GPU model in one of them"
# The node label of the GPU model, as NVIDIA's GPU feature discovery sets it.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# Also the regular expressions of rules, in the dialect both RE2 (CEL) and Python read; no
# backslashes, which a CEL string literal would read as its own escapes.
OUTSIDE_VOLUME = r"^/|(^|/)[.][.](/|$)"
ENV_NAME = r"^[ -<>-~]+$"
# distribution/reference's grammar, less IPv6 hosts and digests other than sha256:
# [host[:port]/]path[:tag][@sha256:hex], the path in lowercase.
_HOST_COMPONENT = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_COMPONENT = "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = (f"^({_HOST_COMPONENT}([.]{_HOST_COMPONENT})*(:[0-9]+)?/)?"
                   f"{_PATH_COMPONENT}(/{_PATH_COMPONENT})*"
                   "(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
# The option an argument gives to argparse: --name of --name=value, -b of -b256.
OPTION = r"^--[^= ]+|^-[^- ]"

# Options the trainer must not get from spec.training.extraArgs, and what sets them instead:
# extraArgs come last on the command line, where they would silently win over the spec.
# Every option the operator renders (contract.OPERATOR_FLAGS), their other spellings, and
# the launch and rendezvous options, which the pods' PET_* environment sets (torchrun's
# --rdzv-* the trainer would refuse anyway; whoever writes them means the rendezvous).
_RENDEZVOUS = "the operator (the rendezvous of the pods)"
_SET_BY = {
    Flag.METRICS_PORT: "the operator (RESNET50_OPERATOR_METRICS_PORT)",
    Flag.PRESET: "spec.training.preset",
    Flag.SYNTHETIC: "spec.dataset.synthetic",
    Flag.DATA_PATH: "the operator from spec.dataset",
    Flag.OUTPUT_DIR: "the operator from spec.checkpoint",
    Flag.CHECKPOINT_INTERVAL: "spec.checkpoint.intervalMinutes",
    Flag.DEVICE: "the operator from spec.gpusPerNode",
    Flag.PRECISION: "spec.training.precision",
    Flag.EPOCHS: "spec.training.epochs",
    Flag.BATCH_SIZE: "spec.training.batchSize",
    Flag.LR: "spec.training.lr",
    Flag.WORKERS: "spec.training.workers",
    Flag.PRINT_FREQ: "spec.training.printFreq",
    Flag.CHANNELS_LAST: "spec.training.channelsLast",
    Flag.NO_CHANNELS_LAST: "spec.training.channelsLast",
}
OPERATOR_OPTIONS = {
    **{flag: _SET_BY.get(flag, "the operator") for flag in OPERATOR_FLAGS},
    "-b": "spec.training.batchSize",
    "-j": "spec.training.workers",
    "--amp": "spec.training.precision",
    "--resume": "the operator, which resumes from the newest checkpoint of spec.checkpoint",
    "--nnodes": "the operator from spec.nodes",
    "--nproc-per-node": "the operator from spec.gpusPerNode or spec.processesPerNode",
    **dict.fromkeys(("--node-rank", "--master-addr", "--master-port", "--rdzv-backend",
                     "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf", "--world-size",
                     "--dist-url"), _RENDEZVOUS),
}
OPERATOR_OPTION_MESSAGES = {flag: f"{flag} is set by {by}" for flag, by in OPERATOR_OPTIONS.items()}


def cel(rule: str, message: str, **more: str) -> dict[str, str]:
    """One x-kubernetes-validations entry; `more`: fieldPath, messageExpression, reason."""
    return {"rule": rule, "message": message, **more}


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _count_set(*fields: str) -> str:
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)


def _refusal(where: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A refusal of `where`, a field inside the one being validated: a rule that reads two
    fields names the one to change, as its CEL rule's fieldPath does in the apiserver."""
    return ValidationError.from_exception_data("ResNet50TrainingSpec", [{
        "type": PydanticCustomError("value_error", message), "loc": where, "input": value}])


def _positive_quantity(value: str) -> str:
    match = re.fullmatch(QUANTITY, value)
    if not match or match["sign"] == "-" or float(match["number"]) == 0:
        raise ValueError(MSG_QUANTITY)
    return value


def _inside_volume(value: str) -> str:
    if re.search(OUTSIDE_VOLUME, value):
        raise ValueError(MSG_SUB_PATH)
    return value


def _image_reference(value: str) -> str:
    if not re.fullmatch(IMAGE_REFERENCE, value):
        raise ValueError(MSG_IMAGE)
    return value


def _not_an_operator_option(arg: str) -> str:
    # argparse takes an unambiguous prefix for the option (--out for --output-dir): refuse
    # every prefix of an operator option; torchrun's habit, '_' for '-', too.
    if option := re.search(OPTION, arg):
        name = option[0].replace("_", "-")
        for flag, message in OPERATOR_OPTION_MESSAGES.items():
            if flag.startswith(name):
                raise ValueError(message)
    return arg


def _operator_option_rule() -> dict[str, str]:
    """The CEL twin of _not_an_operator_option: the flags in a list, whose order (unlike a
    map's) picks the same flag as the model when a prefix names several."""
    name = f"self.find('{OPTION}').replace('_', '-')"
    flags = "[" + ", ".join(f"'{f}'" for f in OPERATOR_OPTION_MESSAGES) + "]"
    messages = "{" + ", ".join(f"'{f}': '{m}'" for f, m in OPERATOR_OPTION_MESSAGES.items()) \
        + "}"
    return cel(f"self.find('{OPTION}') == '' || !{flags}.exists(f, f.startsWith({name}))",
               MSG_OPERATOR_OPTION,
               messageExpression=f"{messages}[{flags}.filter(f, f.startsWith({name}))[0]]")


Quantity = Annotated[str, AfterValidator(_positive_quantity), Field(
    max_length=64, json_schema_extra=validations(cel(
        "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))", MSG_QUANTITY)))]
SubPath = Annotated[str, AfterValidator(_inside_volume), Field(
    max_length=1024, json_schema_extra=validations(cel(
        f"!self.matches('{OUTSIDE_VOLUME}')", MSG_SUB_PATH)))]
# The lengths bound the rules' cost, which the apiserver checks when it takes the CRD.
ImageReference = Annotated[str, AfterValidator(_image_reference), Field(
    max_length=512, json_schema_extra=validations(cel(
        f"self.matches('{IMAGE_REFERENCE}')", MSG_IMAGE)))]
TrainerArg = Annotated[str, AfterValidator(_not_an_operator_option), Field(
    max_length=512, json_schema_extra=validations(_operator_option_rule()))]


class PersistentVolumeClaimRef(_Model):
    claim_name: str = Field(min_length=1, description="Name of a PersistentVolumeClaim in the "
                            "namespace of the training.")


class HostPathRef(_Model):
    path: str = Field(pattern=r"^/", description="Absolute directory on the node.")


class NFSRef(_Model):
    server: str = Field(min_length=1, description="NFS server host name or address.")
    path: str = Field(pattern=r"^/", description="Exported directory.")


class DatasetSpec(_Model):
    model_config = ConfigDict(json_schema_extra={
        "description": "Where the ImageNet data is: mounted read-only at /data. Set exactly "
        "one of persistentVolumeClaim, hostPath and nfs, or synthetic: true.",
        **validations(
            cel("!self.synthetic || " + _count_set("persistentVolumeClaim", "hostPath", "nfs")
                + " == 0", MSG_SYNTHETIC_TAKES_NO_VOLUME),
            cel("self.synthetic || " + _count_set("persistentVolumeClaim", "hostPath", "nfs")
                + " == 1", MSG_DATASET_SOURCE),
        ),
    })

    synthetic: bool = Field(False, description="Generated tensors instead of images (smoke "
                            "tests, benchmarks); no volume needed.")
    persistent_volume_claim: PersistentVolumeClaimRef | None = Field(
        None, description="A PVC holding the dataset (ReadOnlyMany or ReadWriteMany for "
        "several nodes).")
    host_path: HostPathRef | None = Field(None, description="A directory present on every node.")
    nfs: NFSRef | None = Field(None, description="An NFS export.")
    sub_path: SubPath = Field("", description="Directory inside the volume that holds train/ "
                              "and val/ (or train_list.txt and val_list.txt).")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DatasetSpec:
        sources = [s for s in (self.persistent_volume_claim, self.host_path, self.nfs) if s]
        if self.synthetic and sources:
            raise ValueError(MSG_SYNTHETIC_TAKES_NO_VOLUME)
        if not self.synthetic and len(sources) != 1:
            raise ValueError(MSG_DATASET_SOURCE)
        return self


class CheckpointSpec(_Model):
    model_config = ConfigDict(json_schema_extra={
        "description": "Storage for checkpoints and metrics, mounted read-write at "
        "/checkpoints on every node, so a restarted group resumes. Set exactly one of "
        "persistentVolumeClaim and hostPath. Without it, checkpoints live in the pod and a "
        "restart trains from the beginning.",
        **validations(cel(_count_set("persistentVolumeClaim", "hostPath") + " == 1",
                          MSG_CHECKPOINT_SOURCE)),
    })

    persistent_volume_claim: PersistentVolumeClaimRef | None = Field(
        None, description="A ReadWriteMany PVC (shared by all nodes of the job).")
    host_path: HostPathRef | None = Field(None, description="A directory on the node (one-node "
                                          "jobs, or a path every node shares).")
    sub_path: SubPath = Field("", description="Directory inside the volume; default: the name "
                              "of the training, so jobs can share one volume.")
    interval_minutes: int | None = Field(
        None, ge=1, le=24 * 60, description="Also write a checkpoint every this many minutes "
        "within an epoch (--checkpoint-interval-minutes), so that a failure or a disruption "
        "loses at most about that much training; unset: only at the end of each epoch.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> CheckpointSpec:
        if (self.persistent_volume_claim is None) == (self.host_path is None):
            raise ValueError(MSG_CHECKPOINT_SOURCE)
        return self


class TrainingOptions(_Model):
    model_config = ConfigDict(json_schema_extra={
        "description": "Options of the bundled trainer (resnet50-train); unset ones come from "
        "the preset, then from the trainer's defaults."
    })

    preset: Literal[PRESET_NAMES] | None = Field(  # type: ignore[valid-type]
        None, description="A reference configuration of the trainer (batch size, precision).")
    precision: Literal[PRECISIONS] | None = Field(  # type: ignore[valid-type]
        None, description="fp32, amp (fp16 autocast with a GradScaler) or bf16.")
    channels_last: bool | None = Field(None, description="NHWC memory format.")
    epochs: int | None = Field(None, ge=1, description="Training epochs.")
    batch_size: int | None = Field(None, ge=1, description="Images per process (per GPU).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate; default: 0.1 per 256 "
                             "images of the global batch.")
    workers: int | None = Field(None, ge=0, description="DataLoader workers per process.")
    print_freq: int | None = Field(None, ge=1, description="Log every N steps.")
    extra_args: list[TrainerArg] = Field(
        default_factory=list, max_length=128, description="More resnet50-train arguments, "
        "appended as given; not the options the operator sets (--output-dir, --epochs, "
        "--nnodes, ...): set their spec fields instead.")


class ResourcesSpec(_Model):
    cpu: Quantity | None = Field(None, description="CPU request and limit per pod, e.g. '32'.")
    memory: Quantity | None = Field(None, description="Memory request and limit per pod, "
                                    "e.g. '256Gi'.")


class RestartPolicySpec(_Model):
    # has(): the apiserver also checks the section's own default, {}, before its fields' defaults.
    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.backoffSeconds) || !has(self.maxBackoffSeconds) || "
        "self.backoffSeconds <= self.maxBackoffSeconds", MSG_BACKOFF,
        fieldPath=".maxBackoffSeconds")))

    max_restarts: int = Field(3, ge=0, description="Whole-group restarts after retryable "
                              "failures (a signal, an OOM kill, a deleted pod, a hang) before "
                              "the training is Failed; disruptions do not count.")
    max_disruptions: int | None = Field(
        None, ge=0, description="Whole-group restarts after disruptions (a pod evicted, "
        "preempted or lost with its node: Kubernetes' DisruptionTarget condition) before the "
        "training is Failed (DisruptionLimitExceeded); they restart at once and do not count "
        "against maxRestarts; unset: no limit.")
    backoff_seconds: int = Field(10, ge=0, le=MAX_SECONDS, description="Wait before the "
                                 "first restart; doubles with each restart.")
    max_backoff_seconds: int = Field(300, ge=0, le=MAX_SECONDS,
                                     description="Upper bound of the wait.")

    @field_validator("max_backoff_seconds")
    @classmethod
    def _not_below_the_first_wait(cls, bound: int, info: ValidationInfo) -> int:
        if bound < info.data.get("backoff_seconds", 0):
            raise ValueError(MSG_BACKOFF)
        return bound


class GangSpec(_Model):
    # has(): the apiserver also checks the section's own default, {}, before its fields'.
    model_config = ConfigDict(json_schema_extra=validations(
        cel("!has(self.mode) || self.mode != 'kueue' || has(self.queue)", MSG_GANG_QUEUE,
            fieldPath=".queue"),
        cel("!has(self.scheduleTimeoutSeconds) || (has(self.mode) && "
            "self.mode == 'coscheduling')", MSG_GANG_TIMEOUT,
            fieldPath=".scheduleTimeoutSeconds")))

    mode: Literal["none", "kueue", "volcano", "coscheduling"] = Field(
        "none", description="All-or-nothing admission of the pods of an attempt: none (the "
        "default scheduler places each pod as it can), kueue (a Kueue plain-pod group in "
        "queue), volcano (a Volcano PodGroup, schedulerName volcano) or coscheduling (a "
        "scheduler-plugins PodGroup).")
    # validate_default: the checks below also run when the field is left out.
    queue: str | None = Field(None, min_length=1, max_length=253, validate_default=True,
                              description="kueue: the LocalQueue of the training's namespace "
                              "(required); volcano: the Queue (default: Volcano's default "
                              "queue).")
    schedule_timeout_seconds: int | None = Field(
        None, ge=1, le=MAX_SECONDS, description="coscheduling: how long the scheduler waits "
        "for all pods of the group before it gives up on this round.")

    @field_validator("queue")
    @classmethod
    def _kueue_needs_a_queue(cls, queue: str | None, info: ValidationInfo) -> str | None:
        if queue is None and info.data.get("mode") == "kueue":
            raise ValueError(MSG_GANG_QUEUE)
        return queue

    @field_validator("schedule_timeout_seconds")
    @classmethod
    def _only_for_coscheduling(cls, seconds: int | None, info: ValidationInfo) -> int | None:
        if seconds is not None and info.data.get("mode") != "coscheduling":
            raise ValueError(MSG_GANG_TIMEOUT)
        return seconds


class PlacementSpec(_Model):
    model_config = ConfigDict(json_schema_extra={
        "description": "Where the pods go relative to each other and which GPUs they get: "
        "required terms the operator adds to the pods' affinity and nodeSelector, after the "
        "user's own."})

    one_pod_per_node: bool | None = Field(
        None, description="Never two pods of the training on one node (a required "
        "podAntiAffinity on kubernetes.io/hostname). Unset: on with GPUs, where each pod is "
        "meant to be a whole machine (two on one node would share its network and GPU "
        "links); off on the CPU, where small trainings may share a node.")
    # A label key: a DNS-subdomain prefix (253), '/', a name (63).
    topology_key: str | None = Field(
        None, min_length=1, max_length=317, description="A node label whose value all pods "
        "share, e.g. topology.kubernetes.io/zone or network.topology.nvidia.com/block (a "
        "required podAffinity among the training's pods on this topologyKey). The first pod "
        "picks the domain, the others follow it; nodes without the label are never chosen.")
    gpu_product: str | None = Field(
        None, min_length=1, max_length=63, description="Only nodes whose "
        f"{GPU_PRODUCT_LABEL} label (NVIDIA's GPU feature discovery) is this, e.g. "
        "NVIDIA-H100-80GB-HBM3; GPU trainings only.")


class SchedulingSpec(_Model):
    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.placement) || !has(self.placement.gpuProduct) || !has(self.nodeSelector) "
        f"|| !('{GPU_PRODUCT_LABEL}' in self.nodeSelector) || "
        f"self.nodeSelector['{GPU_PRODUCT_LABEL}'] == self.placement.gpuProduct",
        MSG_GPU_PRODUCT_SELECTOR, fieldPath=".placement.gpuProduct")))

    gang: GangSpec = Field(default_factory=GangSpec, description="Gang admission: all pods "
                           "of an attempt start together or none does.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the "
                                          "pods require.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Pod "
                                              "tolerations (core/v1 Toleration).")
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity (core/v1 Affinity).")
    priority_class_name: str | None = Field(None, description="PriorityClass of the pods.")
    scheduler_name: str | None = Field(None, description="Scheduler of the pods (e.g. a gang "
                                       "scheduler).")
    # After node_selector, which its check reads.
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="One pod per "
                                     "node, one topology domain, the GPU model.")

    @field_validator("placement")
    @classmethod
    def _one_gpu_model(cls, placement: PlacementSpec, info: ValidationInfo) -> PlacementSpec:
        given = (info.data.get("node_selector") or {}).get(GPU_PRODUCT_LABEL)
        if placement.gpu_product and given is not None and given != placement.gpu_product:
            raise _refusal(("gpuProduct",), MSG_GPU_PRODUCT_SELECTOR, placement.gpu_product)
        return placement


class RunPolicySpec(_Model):
    active_deadline_seconds: int | None = Field(None, ge=1, le=MAX_SECONDS, description="Fail "
                                                "the training when it has run this long, as "
                                                "in a Job.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=MAX_SECONDS,
                                                   description="Delete the training this long "
                                                   "after it finished.")
    suspend: bool = Field(False, description="Delete the pods and keep the training until "
                          "set back to false; it then resumes from its checkpoint.")
    progress_deadline_seconds: int = Field(
        1800, ge=0, le=MAX_SECONDS, description="Restart the group (reason NoProgress, counted "
        "as a restart) when the trainer reported progress before but its step count has not "
        "moved for this long since the later of its last progress and the moment all pods "
        "ran; 0: never.")
    first_progress_deadline_seconds: int = Field(
        3600, ge=0, le=MAX_SECONDS, description="Restart the group (reason StartupTimeout, "
        "counted as a restart) when the trainer has reported no progress this long after all "
        "pods of the attempt ran: a rendezvous that never completes, a hung start; it must "
        "leave room for indexing the dataset and compiling; 0: never.")
    startup_timeout_seconds: int | None = Field(None, ge=1, le=MAX_SECONDS, description="Fail "
                                                "the training when the pods of an attempt are "
                                                "not all running this long after their "
                                                "creation.")
    termination_grace_period_seconds: int = Field(
        120, ge=1, le=3600, description="The pods' terminationGracePeriodSeconds: how long a "
        "deleted pod (a drain, an eviction, a preemption, a restart) may take to stop before "
        "it is killed. On SIGTERM the trainer finishes its current report window, writes a "
        "checkpoint and exits, which must fit in it. Applies to the pods created after a "
        "change.")


class PodTemplateMetadata(_Model):
    labels: dict[str, str] = Field(default_factory=dict, description="Added to the pods' "
                                   "labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Added to the pods' "
                                        "annotations (e.g. k8s.v1.cni.cncf.io/networks).")


class PodTemplate(_Model):
    metadata: PodTemplateMetadata = Field(default_factory=PodTemplateMetadata,
                                          description="Labels and annotations of the pods.")
    spec: dict[str, Any] = Field(
        default_factory=dict, description="core/v1 PodSpec fields added to the pods: "
        "hostNetwork, dnsPolicy, runtimeClassName, ...; volumes, initContainers and "
        "containers (sidecars) are appended, and a container named trainer is merged into "
        "the trainer: its extra resources (rdma/..., nvidia.com/hostdev), volumeMounts and "
        "securityContext.capabilities.add. What the operator or another spec field sets is "
        "refused, naming that field.")


class EnvVar(_Model):
    model_config = ConfigDict(json_schema_extra=validations(
        cel(f"!(self.name in {list(OPERATOR_ENV)})", "a variable of the rendezvous is set by "
            "the operator", messageExpression=f"self.name + '{MSG_ENV_RESERVED}'",
            fieldPath=".name"),
        cel("!(has(self.value) && has(self.valueFrom))", MSG_ENV_VALUE),
    ))

    name: str = Field(min_length=1, max_length=256, description="Variable name.",
                      json_schema_extra=validations(cel(f"self.matches('{ENV_NAME}')",
                                                        MSG_ENV_NAME)))
    value: str | None = Field(None, description="Its value.")
    value_from: dict[str, Any] | None = Field(None, description="Or where its value comes "
                                              "from (core/v1 EnvVarSource).")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not re.fullmatch(ENV_NAME, name):
            raise ValueError(MSG_ENV_NAME)
        if name in OPERATOR_ENV:
            raise ValueError(f"{name}{MSG_ENV_RESERVED}")
        return name

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(MSG_ENV_VALUE)
        return self


class LocalObjectReference(_Model):
    name: str = Field(min_length=1, description="Name of the Secret.")


class ResNet50TrainingSpec(_Model):
    """What users write under .spec."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.gpusPerNode == 0 || self.processesPerNode == 1", MSG_PROCESSES,
            fieldPath=".processesPerNode"),
        cel("self.gpusPerNode > 0 || !has(self.scheduling) || !has(self.scheduling.placement) "
            "|| !has(self.scheduling.placement.gpuProduct)", MSG_GPU_PRODUCT_ON_CPU,
            fieldPath=".scheduling.placement.gpuProduct")))

    image: ImageReference | None = Field(None, description="Trainer image; default: the "
                                         "operator's configured trainer image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="When the kubelet pulls the image.")
    nodes: int = Field(1, ge=1, le=1024, description="Pods, one per node.")
    gpus_per_node: int = Field(8, ge=0, le=16, description="GPUs per pod, one process each; 0 "
                               "trains on the CPU with gloo and processesPerNode processes.")
    processes_per_node: int = Field(1, ge=1, le=64, description="Processes per pod when "
                                    "gpusPerNode is 0.")
    gpu_resource_name: str = Field("nvidia.com/gpu", min_length=1, description="Extended "
                                   "resource of the GPUs, e.g. iluvatar.ai/gpu.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec,
                                     description="CPU and memory of each pod.")
    shm_size: Quantity = Field("8Gi", description="Size of the /dev/shm memory volume that "
                               "DataLoader workers exchange batches through.")
    dataset: DatasetSpec = Field(description="The training data.")
    checkpoint: CheckpointSpec | None = Field(None, description="Checkpoint storage.")
    training: TrainingOptions = Field(default_factory=TrainingOptions,
                                      description="Trainer options.")
    restart_policy: RestartPolicySpec = Field(default_factory=RestartPolicySpec,
                                              description="Whole-group restarts.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec,
                                       description="Where the pods may run.")
    env: list[EnvVar] = Field(
        default_factory=list, max_length=128, description="Extra environment variables of the "
        "trainer; they win over the operator's NCCL defaults; its rendezvous variables "
        f"({', '.join(OPERATOR_ENV)}) may not be set.", json_schema_extra=validations(cel(
            "self.all(e, self.exists_one(f, f.name == e.name))", MSG_ENV_UNIQUE)))
    service_account_name: str | None = Field(None, description="ServiceAccount of the pods.")
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list,
                                                           description="Secrets to pull the "
                                                           "image with.")
    run_policy: RunPolicySpec = Field(default_factory=RunPolicySpec,
                                      description="Deadline, clean-up, suspension and the "
                                      "pods' grace period.")
    pod_template: PodTemplate | None = Field(None, description="Additions to the pods (a "
                                             "core/v1 PodTemplateSpec): a fast network's "
                                             "devices and annotations, sidecars, volumes.")

    @field_validator("processes_per_node")
    @classmethod
    def _processes_only_on_the_cpu(cls, processes: int, info: ValidationInfo) -> int:
        if info.data.get("gpus_per_node") and processes != 1:
            raise ValueError(MSG_PROCESSES)
        return processes

    @field_validator("scheduling")
    @classmethod
    def _gpu_product_needs_gpus(cls, scheduling: SchedulingSpec,
                                info: ValidationInfo) -> SchedulingSpec:
        product = scheduling.placement.gpu_product
        if product and info.data.get("gpus_per_node") == 0:
            raise _refusal(("placement", "gpuProduct"), MSG_GPU_PRODUCT_ON_CPU, product)
        return scheduling

    @field_validator("pod_template")
    @classmethod
    def _nothing_the_operator_sets(cls, template: PodTemplate | None,
                                   info: ValidationInfo) -> PodTemplate | None:
        if template is None:
            return None
        gpu = info.data.get("gpu_resource_name") if info.data.get("gpus_per_node") else None
        given = template.model_dump(by_alias=True)
        found = overrides.problems(given, gpu)
        if found:
            raise ValidationError.from_exception_data("ResNet50TrainingSpec", [
                {"type": PydanticCustomError("value_error", p.why), "loc": (p.field,),
                 "input": given} for p in found])
        return template

    @property
    def host_network(self) -> bool:
        return bool(self.pod_template and self.pod_template.spec.get("hostNetwork"))

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [v.name for v in env]
        if len(set(names)) != len(names):
            raise ValueError(MSG_ENV_UNIQUE)
        return env

    @property
    def processes(self) -> int:
        """Processes per pod: one per GPU, or processesPerNode on the CPU."""
        return self.gpus_per_node or self.processes_per_node

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes

    @property
    def one_pod_per_node(self) -> bool:
        """spec.scheduling.placement.onePodPerNode, or its default: on with GPUs, off for
        CPU trainings, whose demos and tests put two pods on one node."""
        given = self.scheduling.placement.one_pod_per_node
        return self.gpus_per_node > 0 if given is None else given


# The printer columns and the status schema ---------------------------------------------


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""
    observed_generation: int | None = None


class NodeCount(_Model):
    ready: int = 0
    total: int = 0


class RestartRecord(_Model):
    attempt: int = Field(description="The attempt that failed (0 is the first).")
    time: str
    reason: str
    message: str = ""
    disruption: bool = Field(False, description="A disruption (eviction, preemption, lost "
                             "node): counted in disruptions, not in restarts.")


class FailureRecord(_Model):
    pod: str
    exit_code: int | None = None
    reason: str = ""
    message: str = Field("", description="The end of the container's log or termination "
                         "message; for a disruption, followed by Kubernetes' message for it.")


class CheckpointRecord(_Model):
    epoch: int = Field(description="Epoch of the checkpoint.")
    time: str = Field(description="When it was written.")


class TrainingProgress(_Model):
    """What the trainer last reported (its metrics endpoint), for kubectl get and describe."""

    epoch: str | None = Field(None, description="Epoch being trained of all, e.g. 37/90.")
    step: str | None = Field(None, description="Step in the epoch of all, e.g. 120/5005.")
    global_step: int | None = Field(None, description="Steps since the start of the run.")
    loss: float | None = None
    lr: float | None = None
    images_per_second: int | None = Field(None, description="All ranks together.")
    top1: float | None = Field(None, description="Acc@1 of the last evaluation, percent.")
    top5: float | None = Field(None, description="Acc@5 of the last evaluation, percent.")
    eta: str | None = Field(None, description="Time to the end of training, e.g. 3h12m.")
    last_checkpoint: CheckpointRecord | None = None
    last_progress_time: str | None = Field(None, description="When the step count last moved.")


class ResNet50TrainingStatus(_Model):
    # The status may carry fields of other writers (kopf's own bookkeeping): ignore them.
    model_config = ConfigDict(extra="ignore")

    phase: Literal["Pending", "Running", "Restarting", "Suspended", "Succeeded", "Failed"] = \
        "Pending"
    attempt: int = Field(0, description="Current attempt; each whole-group restart adds one.")
    pods_created: bool = Field(False, description="Whether every pod of the attempt was "
                               "created; a pod missing afterwards was deleted.")
    restarts: int = Field(0, description="Whole-group restarts after failures, counted "
                          "against spec.restartPolicy.maxRestarts.")
    disruptions: int = Field(0, description="Whole-group restarts after disruptions (evicted, "
                             "preempted or lost pods), counted against "
                             "spec.restartPolicy.maxDisruptions, not maxRestarts.")
    restart_at: str | None = Field(None, description="When the back-off of a restart ends.")
    nodes: NodeCount = Field(default_factory=NodeCount)
    ready: str = Field("0/0", description="nodes.ready/nodes.total, for kubectl get.")
    gpus: int = 0
    start_time: str | None = None
    attempt_start_time: str | None = Field(None, description="When the pods of the current "
                                           "attempt were created.")
    world_size: int | None = Field(None, description="Processes of the last attempt whose "
                                   "pods were created (its checkpoints' global batch is this "
                                   "times batchSize).")
    batch_size: int | None = Field(None, description="spec.training.batchSize of that "
                                   "attempt; null: the preset's or the trainer's.")
    completion_time: str | None = None
    training: TrainingProgress | None = None
    last_failure: FailureRecord | None = None
    restart_history: list[RestartRecord] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
