"""Bad ResNet50Training specs that both the CRD's CEL rules (the apiserver, at kubectl apply)
and the operator's model refuse, with the same message: the one list of such cases.

tests/operator/test_spec_rules.py sends each to the model, tests/integration/test_crd_rules.py
to a real kube-apiserver. `field` is in the apiserver's notation (spec.env[0].name).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from resnet50_operator import spec as s


class BadSpec(NamedTuple):
    id: str
    change: dict[str, Any]  # merged into a valid spec (2 nodes x 8 GPUs, a PVC dataset)
    field: str
    message: str


PVC = {"persistentVolumeClaim": {"claimName": "imagenet"}}
BAD_SPECS = [
    BadSpec("kueue-without-a-queue", {"scheduling": {"gang": {"mode": "kueue"}}},
            "spec.scheduling.gang.queue", s.MSG_GANG_QUEUE),
    BadSpec("schedule-timeout-without-coscheduling", {"scheduling": {"gang": {
        "mode": "volcano", "scheduleTimeoutSeconds": 60}}},
            "spec.scheduling.gang.scheduleTimeoutSeconds", s.MSG_GANG_TIMEOUT),
    BadSpec("two-data-sources", {"dataset": {**PVC, "hostPath": {"path": "/d"}}},
            "spec.dataset", s.MSG_DATASET_SOURCE),
    BadSpec("no-data-source", {"dataset": {"subPath": "x"}}, "spec.dataset",
            s.MSG_DATASET_SOURCE),
    BadSpec("synthetic-and-a-volume", {"dataset": {"synthetic": True, "hostPath": {"path": "/d"}}},
            "spec.dataset", s.MSG_SYNTHETIC_TAKES_NO_VOLUME),
    BadSpec("two-checkpoint-sources", {"checkpoint": {**PVC, "hostPath": {"path": "/c"}}},
            "spec.checkpoint", s.MSG_CHECKPOINT_SOURCE),
    BadSpec("no-checkpoint-source", {"checkpoint": {"subPath": "runs"}}, "spec.checkpoint",
            s.MSG_CHECKPOINT_SOURCE),
    BadSpec("dataset-subpath-escapes", {"dataset": {**PVC, "subPath": "../other"}},
            "spec.dataset.subPath", s.MSG_SUB_PATH),
    BadSpec("checkpoint-subpath-escapes", {"checkpoint": {**PVC, "subPath": "runs/../../x"}},
            "spec.checkpoint.subPath", s.MSG_SUB_PATH),
    BadSpec("dataset-subpath-absolute", {"dataset": {**PVC, "subPath": "/abs"}},
            "spec.dataset.subPath", s.MSG_SUB_PATH),
    BadSpec("image-with-a-space", {"image": "my image"}, "spec.image", s.MSG_IMAGE),
    BadSpec("image-in-uppercase", {"image": "UPPER/Case"}, "spec.image", s.MSG_IMAGE),
    BadSpec("extra-args-output-dir", {"training": {"extraArgs": ["--output-dir", "/x"]}},
            "spec.training.extraArgs[0]", s.OPERATOR_OPTION_MESSAGES["--output-dir"]),
    BadSpec("extra-args-nnodes", {"training": {"extraArgs": ["--nnodes=3"]}},
            "spec.training.extraArgs[0]", s.OPERATOR_OPTION_MESSAGES["--nnodes"]),
    BadSpec("extra-args-epochs", {"training": {"extraArgs": ["--epochs", "5"]}},
            "spec.training.extraArgs[0]", s.OPERATOR_OPTION_MESSAGES["--epochs"]),
    # argparse reads an unambiguous prefix as the option; torchrun users write '_' for '-'.
    BadSpec("extra-args-abbreviated", {"training": {"extraArgs": ["--wd", "0", "--out=/x"]}},
            "spec.training.extraArgs[2]", s.OPERATOR_OPTION_MESSAGES["--output-dir"]),
    BadSpec("extra-args-underscores", {"training": {"extraArgs": ["--nproc_per_node=8"]}},
            "spec.training.extraArgs[0]", s.OPERATOR_OPTION_MESSAGES["--nproc-per-node"]),
    BadSpec("extra-args-short-option", {"training": {"extraArgs": ["-b256"]}},
            "spec.training.extraArgs[0]", s.OPERATOR_OPTION_MESSAGES["-b"]),
    BadSpec("negative-memory", {"resources": {"memory": "-1Gi"}}, "spec.resources.memory",
            s.MSG_QUANTITY),
    BadSpec("zero-cpu", {"resources": {"cpu": "0"}}, "spec.resources.cpu", s.MSG_QUANTITY),
    BadSpec("memory-in-words", {"resources": {"memory": "lots"}}, "spec.resources.memory",
            s.MSG_QUANTITY),
    BadSpec("negative-shm", {"shmSize": "-8Gi"}, "spec.shmSize", s.MSG_QUANTITY),
    BadSpec("reserved-env", {"env": [{"name": "RANK", "value": "3"}]}, "spec.env[0].name",
            "RANK" + s.MSG_ENV_RESERVED),
    BadSpec("env-name-with-equals", {"env": [{"name": "A=B", "value": "1"}]},
            "spec.env[0].name", s.MSG_ENV_NAME),
    BadSpec("env-value-and-source", {"env": [{"name": "A", "value": "1", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.name"}}}]}, "spec.env[0]", s.MSG_ENV_VALUE),
    BadSpec("env-set-twice", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
            "spec.env", s.MSG_ENV_UNIQUE),
    BadSpec("processes-with-gpus", {"processesPerNode": 4}, "spec.processesPerNode",
            s.MSG_PROCESSES),
    BadSpec("gpu-product-on-the-cpu", {"gpusPerNode": 0, "scheduling": {"placement": {
        "gpuProduct": "NVIDIA-H100-80GB-HBM3"}}}, "spec.scheduling.placement.gpuProduct",
            s.MSG_GPU_PRODUCT_ON_CPU),
    BadSpec("gpu-product-against-the-node-selector", {"scheduling": {
        "nodeSelector": {s.GPU_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB"},
        "placement": {"gpuProduct": "NVIDIA-H100-80GB-HBM3"}}},
            "spec.scheduling.placement.gpuProduct", s.MSG_GPU_PRODUCT_SELECTOR),
    BadSpec("backoff-above-its-bound", {"restartPolicy": {"backoffSeconds": 600,
                                                          "maxBackoffSeconds": 300}},
            "spec.restartPolicy.maxBackoffSeconds", s.MSG_BACKOFF),
]

# Changes that both accept, close to the rules above.
GOOD_CHANGES = [
    {"image": "resnet50-operator/trainer:0.1.0"},
    {"image": "localhost:5000/a/b@sha256:" + "0123456789abcdef" * 4},
    {"image": "nvcr.io/nvidia/pytorch:24.01-py3"},
    {"image": "registry.example.com:443/team/sub_team/trainer.v2:1.0__rc-1"},
    {"dataset": {**PVC, "subPath": "imagenet/2012..old/"}},
    {"checkpoint": {**PVC, "subPath": "runs/r50"}},
    {"scheduling": {"nodeSelector": {s.GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"},
                    "placement": {"gpuProduct": "NVIDIA-H100-80GB-HBM3"}}},
    {"gpusPerNode": 0, "scheduling": {"placement": {"onePodPerNode": True,
                                                    "topologyKey": "topology.kubernetes.io/zone"}}},
    {"training": {"extraArgs": ["--label-smoothing=0.1", "--lr-steps", "30", "60", "--seed",
                                "-1", "--synthetic-train-size", "64", "--data-backend", "gpu",
                                "--global-batch-size", "1024", "--no-compile"]}},
]


def valid_spec(**change: Any) -> dict[str, Any]:
    return {"nodes": 2, "gpusPerNode": 8, "dataset": dict(PVC), **change}


def model_field(field: str) -> str:
    """spec.env[0].name -> spec.env.0.name, as the model's errors name it."""
    return field.replace("[", ".").replace("]", "")
