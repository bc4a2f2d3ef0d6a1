"""The admin's policy (policy.py): each setting refuses by default and allows once widened;
the messages name the field, the value and the setting."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from resnet50_operator import policy
from resnet50_operator.settings import OperatorSettings
from resnet50_operator.spec import ResNet50TrainingSpec


def spec(**fields: Any) -> ResNet50TrainingSpec:
    """A training the default policy allows, with `fields` replaced."""
    body = {"nodes": 2, "gpusPerNode": 8,
            "dataset": {"persistentVolumeClaim": {"claimName": "imagenet"}}}
    return ResNet50TrainingSpec.model_validate({**body, **fields})


def violations(s: ResNet50TrainingSpec, **settings: Any) -> list[str]:
    return policy.violations(s, OperatorSettings(**settings))


def host_path(path: str) -> dict[str, Any]:
    return {"hostPath": {"path": path}}


DIGEST = "sha256:" + "0" * 64


def secret_env() -> list[dict[str, Any]]:
    return [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]


def test_the_defaults_are_the_safe_ones():
    s = OperatorSettings()
    assert s.allowed_host_path_prefixes == []
    assert s.allowed_image_prefixes == []
    assert s.allow_secret_env is False
    assert s.allow_broad_tolerations is False
    assert (s.max_nodes, s.max_gpus_per_training) == (64, 512)


def test_a_plain_training_is_allowed():
    assert violations(spec()) == []
    assert violations(spec(dataset={"synthetic": True}, gpusPerNode=0)) == []


# (spec fields, settings that allow them, the start of the message under the defaults)
CASES = [
    pytest.param({"dataset": host_path("/etc")}, {"allowed_host_path_prefixes": ["/etc"]},
                 "spec.dataset.hostPath.path /etc is not under an allowed hostPath prefix "
                 "(operator setting RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES: none "
                 "allowed)", id="dataset-hostPath"),
    pytest.param({"checkpoint": host_path("/")}, {"allowed_host_path_prefixes": ["/"]},
                 "spec.checkpoint.hostPath.path / is not under", id="checkpoint-hostPath"),
    pytest.param({"image": "evil.example.com/miner:1"},
                 {"allowed_image_prefixes": ["evil.example.com/"]},
                 "spec.image evil.example.com/miner:1 is outside the trainer image's "
                 "repository resnet50-operator/trainer and every allowed image prefix "
                 "(operator setting RESNET50_OPERATOR_ALLOWED_IMAGE_PREFIXES: none allowed)",
                 id="image"),
    pytest.param({"image": "evil.example.com/miner:1"}, {"allowed_image_prefixes": ["*"]},
                 "spec.image", id="image-any"),
    pytest.param({"env": secret_env()}, {"allow_secret_env": True},
                 "spec.env[0].valueFrom.secretKeyRef (TOKEN from Secret db) reads a Secret, "
                 "which trainings may not (operator setting RESNET50_OPERATOR_ALLOW_SECRET_ENV: "
                 "false)", id="secret-env"),
    pytest.param({"scheduling": {"tolerations": [{"operator": "Exists"}]}},
                 {"allow_broad_tolerations": True},
                 'spec.scheduling.tolerations[0] {"operator": "Exists"} tolerates every taint, '
                 "which trainings may not (operator setting "
                 "RESNET50_OPERATOR_ALLOW_BROAD_TOLERATIONS: false)", id="toleration-all"),
    pytest.param({"scheduling": {"tolerations": [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
         "effect": "NoSchedule"}]}}, {"allow_broad_tolerations": True},
        "spec.scheduling.tolerations[0] {\"key\": \"node-role.kubernetes.io/control-plane\", "
        "\"operator\": \"Exists\", \"effect\": \"NoSchedule\"} tolerates the taint "
        "node-role.kubernetes.io/control-plane", id="toleration-control-plane"),
    pytest.param({"scheduling": {"tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]}},
        {"allow_broad_tolerations": True}, "spec.scheduling.tolerations[0]",
        id="toleration-cordoned"),
    pytest.param({"podTemplate": {"spec": {"containers": [
        {"name": "miner", "image": "evil.example.com/miner:1"}]}}},
        {"allowed_image_prefixes": ["evil.example.com/"]},
        "spec.podTemplate.spec.containers[miner].image evil.example.com/miner:1 is outside "
        "the trainer image's repository resnet50-operator/trainer and every allowed image "
        "prefix (operator setting RESNET50_OPERATOR_ALLOWED_IMAGE_PREFIXES: none allowed)",
        id="sidecar-image"),
    pytest.param({"podTemplate": {"spec": {"initContainers": [
        {"name": "warm", "image": "resnet50-operator/trainer:2", "envFrom": [
            {"secretRef": {"name": "db"}}]}]}}}, {"allow_secret_env": True},
        "spec.podTemplate.spec.initContainers[warm] reads a Secret, which trainings may not "
        "(operator setting RESNET50_OPERATOR_ALLOW_SECRET_ENV: false)", id="sidecar-secret"),
    pytest.param({"podTemplate": {"spec": {"volumes": [
        {"name": "node", "hostPath": {"path": "/var/run"}}]}}},
        {"allowed_host_path_prefixes": ["/var/run"]},
        "spec.podTemplate.spec.volumes[node].hostPath.path /var/run is not under an allowed "
        "hostPath prefix", id="template-hostPath"),
    pytest.param({"podTemplate": {"spec": {"volumes": [
        {"name": "keys", "secret": {"secretName": "keys"}}]}}}, {"allow_secret_env": True},
        "spec.podTemplate.spec.volumes[keys] mounts a Secret", id="template-secret-volume"),
    pytest.param({"podTemplate": {"spec": {"hostNetwork": True}}}, {"allow_host_network": True},
                 "spec.podTemplate.spec.hostNetwork shares the node's namespace with the pods, "
                 "which trainings may not (operator setting "
                 "RESNET50_OPERATOR_ALLOW_HOST_NETWORK: false)", id="host-network"),
    pytest.param({"podTemplate": {"spec": {"containers": [{"name": "trainer",
        "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}}]}}},
        {"allowed_capabilities": ["IPC_LOCK"]},
        "spec.podTemplate.spec.containers[trainer].securityContext.capabilities.add IPC_LOCK "
        "is not an allowed capability (operator setting "
        "RESNET50_OPERATOR_ALLOWED_CAPABILITIES: none allowed)", id="capability"),
    pytest.param({"nodes": 1024, "gpusPerNode": 0}, {"max_nodes": 1024},
                 "spec.nodes 1024 is more pods than a training may have (operator setting "
                 "RESNET50_OPERATOR_MAX_NODES: 64)", id="nodes"),
    pytest.param({"nodes": 64, "gpusPerNode": 16}, {"max_gpus_per_training": 1024},
                 "spec.nodes x spec.gpusPerNode = 64 x 16 = 1024 GPUs is more than a training "
                 "may have (operator setting RESNET50_OPERATOR_MAX_GPUS_PER_TRAINING: 512)",
                 id="gpus"),
]


@pytest.mark.parametrize(("fields", "allowing", "message"), CASES)
def test_each_setting_refuses_by_default_and_allows_when_set(fields, allowing, message):
    s = spec(**fields)
    (refused,) = violations(s)
    assert refused.startswith(message), refused
    assert violations(s, **allowing) == []


def test_every_violation_is_reported_together():
    s = spec(nodes=128, image="x/y", dataset=host_path("/"), checkpoint=host_path("/etc"),
             env=secret_env(), scheduling={"tolerations": [{"operator": "Exists"}]})
    fields = [v.split()[0] for v in violations(s)]
    assert fields == ["spec.image", "spec.nodes", "spec.nodes", "spec.dataset.hostPath.path",
                      "spec.checkpoint.hostPath.path", "spec.env[0].valueFrom.secretKeyRef",
                      "spec.scheduling.tolerations[0]"]


def test_the_host_pid_and_ipc_namespaces_are_never_given():
    for field in ("hostPID", "hostIPC"):
        (refused,) = violations(spec(podTemplate={"spec": {field: True}}),
                                allow_host_network=True)
        assert refused == (f"spec.podTemplate.spec.{field} shares the node's namespace with "
                           "the pods, which trainings may not")


def test_the_limits_are_inclusive():
    assert violations(spec(nodes=64, gpusPerNode=8)) == []
    assert violations(spec(nodes=4, gpusPerNode=8), max_nodes=4, max_gpus_per_training=32) == []
    (refused,) = violations(spec(nodes=1, gpusPerNode=1), max_gpus_per_training=0)
    assert "1 x 1 = 1 GPUs" in refused
    assert violations(spec(nodes=3, gpusPerNode=0), max_gpus_per_training=0) == []  # CPU


# ------------------------------------------------------------------ hostPath prefixes


@pytest.mark.parametrize(("path", "prefix", "allowed"), [
    ("/data", "/data", True),
    ("/data/imagenet", "/data", True),
    ("/data/imagenet", "/data/", True),
    ("/data//imagenet/./train/", "/data", True),
    ("/database", "/data", False),
    ("/dat", "/data", False),
    ("/", "/data", False),
    ("/anything/at/all", "/", True),
    ("/data/../etc", "/data", False),  # '..' is never compared, even when it stays inside
    ("/data/x/..", "/data", False),
    ("/data/..x", "/data", True),  # a name that starts with dots is a name
])
def test_host_path_prefixes_match_whole_components(path, prefix, allowed):
    assert policy.under_prefix(path, prefix) is allowed
    refused = violations(spec(dataset=host_path(path)), allowed_host_path_prefixes=[prefix])
    assert (refused == []) is allowed


def test_a_host_path_with_dot_dot_is_refused_whatever_is_allowed():
    (refused,) = violations(spec(checkpoint=host_path("/data/../etc")),
                            allowed_host_path_prefixes=["/"])
    assert refused == "spec.checkpoint.hostPath.path /data/../etc has a '..' component, " \
        "which no hostPath may have"


def test_each_host_path_needs_its_own_prefix():
    s = spec(dataset=host_path("/datasets/imagenet"), checkpoint=host_path("/scratch/ckpt"))
    (refused,) = violations(s, allowed_host_path_prefixes=["/datasets"])
    assert refused.startswith("spec.checkpoint.hostPath.path /scratch/ckpt is not under an "
                              "allowed hostPath prefix (operator setting "
                              "RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES: /datasets)")
    assert violations(s, allowed_host_path_prefixes=["/datasets", "/scratch"]) == []


@pytest.mark.parametrize("prefix", ["data", "", "/data/../etc", ".."])
def test_a_host_path_prefix_must_be_absolute_without_dot_dot(prefix):
    with pytest.raises(ValidationError, match="not an absolute path without '..'"):
        OperatorSettings(allowed_host_path_prefixes=[prefix])


# ------------------------------------------------------------------ images


@pytest.mark.parametrize(("image", "allowed"), [
    ("resnet50-operator/trainer:0.1.0", True),  # the default trainer image
    ("resnet50-operator/trainer:0.2.0", True),  # another tag of its repository
    ("resnet50-operator/trainer@" + DIGEST, True),
    ("resnet50-operator/trainer", True),
    ("resnet50-operator/trainer-evil:1", False),
    ("resnet50-operator/operator:0.1.0", False),
    ("docker.io/resnet50-operator/trainer:0.1.0", False),  # compared as written
    ("python:3.12", False),
])
def test_the_trainer_images_repository_is_allowed_by_default(image, allowed):
    assert (violations(spec(image=image)) == []) is allowed


def test_an_unset_image_is_the_trainer_image_and_always_allowed():
    assert violations(spec(), trainer_image="anywhere.example.com/x:1") == []


@pytest.mark.parametrize(("image", "prefix", "allowed"), [
    ("registry.example.com/ml/trainer:1", "registry.example.com/ml", True),
    ("registry.example.com/ml:1", "registry.example.com/ml", True),
    ("registry.example.com/ml@" + DIGEST, "registry.example.com/ml", True),
    ("registry.example.com/mlx/trainer:1", "registry.example.com/ml", False),
    ("registry.example.com/mlx/trainer:1", "registry.example.com/", True),
    ("registry.example.com/ml/trainer:1", "registry.example.com/ml/trainer:1", True),
    ("registry.example.com/ml/trainer:12", "registry.example.com/ml/trainer:1", False),
    ("other.example.com/ml/trainer:1", "registry.example.com/", False),
])
def test_image_prefixes_match_on_a_component_boundary(image, prefix, allowed):
    assert (violations(spec(image=image), allowed_image_prefixes=[prefix]) == []) is allowed


@pytest.mark.parametrize(("image", "repository"), [
    ("resnet50-operator/trainer:0.1.0", "resnet50-operator/trainer"),
    ("localhost:5000/trainer:1", "localhost:5000/trainer"),
    ("localhost:5000/trainer", "localhost:5000/trainer"),
    ("registry/trainer@sha256:0123", "registry/trainer"),
    ("registry/trainer:1@sha256:0123", "registry/trainer"),
    ("trainer", "trainer"),
])
def test_the_repository_of_an_image(image, repository):
    assert policy.repository(image) == repository


def test_the_trainer_images_repository_follows_the_setting():
    s = spec(image="registry.example.com/ml/trainer:2")
    assert violations(s, trainer_image="registry.example.com/ml/trainer:1") == []
    assert violations(s) != []


# ------------------------------------------------------------------ env and tolerations


@pytest.mark.parametrize("source", [
    {"configMapKeyRef": {"name": "cfg", "key": "k"}},
    {"fieldRef": {"fieldPath": "metadata.name"}},
    {"resourceFieldRef": {"resource": "limits.cpu"}},
])
def test_env_from_other_sources_than_secrets_is_allowed(source):
    assert violations(spec(env=[{"name": "X", "valueFrom": source}, {"name": "Y",
                                                                       "value": "1"}])) == []


@pytest.mark.parametrize("toleration", [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
])
def test_tolerations_of_named_taints_are_allowed(toleration):
    assert violations(spec(scheduling={"tolerations": [toleration]})) == []


# ------------------------------------------------------------------ from the environment


def test_list_settings_are_comma_separated_in_the_environment():
    s = OperatorSettings.from_env({
        "RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES": " /data, /scratch/ckpt ,,",
        "RESNET50_OPERATOR_ALLOWED_IMAGE_PREFIXES": "registry.example.com/ml/",
        "RESNET50_OPERATOR_ALLOW_SECRET_ENV": "true",
        "RESNET50_OPERATOR_ALLOW_BROAD_TOLERATIONS": "1",
        "RESNET50_OPERATOR_MAX_NODES": "8",
        "RESNET50_OPERATOR_MAX_GPUS_PER_TRAINING": "0",
    })
    assert s.allowed_host_path_prefixes == ["/data", "/scratch/ckpt"]
    assert s.allowed_image_prefixes == ["registry.example.com/ml/"]
    assert (s.allow_secret_env, s.allow_broad_tolerations) == (True, True)
    assert (s.max_nodes, s.max_gpus_per_training) == (8, 0)


def test_an_empty_list_setting_is_the_empty_list():
    s = OperatorSettings.from_env({"RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES": "",
                                   "RESNET50_OPERATOR_TRAINER_IMAGE": "x/y:1"})
    assert s.allowed_host_path_prefixes == []
    assert s.trainer_image == "x/y:1"  # other settings are not split at commas


def test_unset_variables_keep_the_defaults():
    assert OperatorSettings.from_env({}) == OperatorSettings()


@pytest.mark.parametrize(("variable", "value"), [
    ("RESNET50_OPERATOR_ALLOWED_HOST_PATH_PREFIXES", "/data,relative"),
    ("RESNET50_OPERATOR_MAX_NODES", "0"),
    ("RESNET50_OPERATOR_MAX_GPUS_PER_TRAINING", "-1"),
    ("RESNET50_OPERATOR_ALLOW_SECRET_ENV", "maybe"),
])
def test_a_bad_setting_stops_the_operator(variable, value):
    with pytest.raises(ValidationError):
        OperatorSettings.from_env({variable: value})


def test_defaults_are_not_shared_between_settings():
    first = OperatorSettings()
    first.allowed_host_path_prefixes.append("/")
    assert OperatorSettings().allowed_host_path_prefixes == []
