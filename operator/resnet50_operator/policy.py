"""The cluster admin's policy: what a training may ask for beyond what its schema allows.

Creating a training is in effect creating pods, made by the operator's ServiceAccount,
which may create any pod in any namespace: the creator of a training needs no right to
create pods, read Secrets or mount the node's files. The operator settings say which pods
it makes on their behalf (docs/security.md). Pure: the spec and the settings in, one
message per violation out, naming the field, its value and the setting that would allow it.
"""

from __future__ import annotations

import json
from typing import Any

from resnet50_operator.settings import ANY_IMAGE, ENV_PREFIX, OperatorSettings
from resnet50_operator.spec import HostPathRef, ResNet50TrainingSpec

# Taints that keep ordinary pods off nodes for the cluster's own sake: its control plane,
# and nodes an admin cordoned (the scheduler lets a pod that tolerates this one onto them).
PROTECTED_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master",
                    "node.kubernetes.io/unschedulable")
# What may follow an image prefix that does not end a component itself: "registry/team"
# allows "registry/team/x", "registry/team:1" and "registry/team@sha256:...", not
# "registry/teammate".
IMAGE_SEPARATORS = "/:@"


def violations(spec: ResNet50TrainingSpec, settings: OperatorSettings) -> list[str]:
    """Why the operator may not create this training's pods; empty: it may."""
    return [*_image(spec, settings), *_size(spec, settings), *_host_paths(spec, settings),
            *_secret_env(spec, settings), *_tolerations(spec, settings)]


def setting(name: str, value: Any) -> str:
    """"operator setting RESNET50_OPERATOR_MAX_NODES: 64", for the messages."""
    assert name in OperatorSettings.model_fields, name
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, list):
        value = ", ".join(value) or "none allowed"
    return f"operator setting {ENV_PREFIX}{name.upper()}: {value}"


# ------------------------------------------------------------------ hostPath


def path_components(path: str) -> tuple[str, ...] | None:
    """'/data//x/./y/' -> ('data', 'x', 'y'); None for a path with a '..' component, which
    could lead anywhere once links are followed, so it is never compared."""
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    return None if ".." in parts else parts


def under_prefix(path: str, prefix: str) -> bool:
    """Component-wise: /data allows /data and /data/x, not /database."""
    p, q = path_components(path), path_components(prefix)
    return p is not None and q is not None and p[:len(q)] == q


def _host_paths(spec: ResNet50TrainingSpec, settings: OperatorSettings) -> list[str]:
    sources: list[tuple[str, HostPathRef | None]] = [
        ("spec.dataset.hostPath.path", spec.dataset.host_path),
        ("spec.checkpoint.hostPath.path", spec.checkpoint.host_path if spec.checkpoint else None),
    ]
    allowed = settings.allowed_host_path_prefixes
    out = []
    for field, ref in sources:
        if ref is None:
            continue
        if path_components(ref.path) is None:
            out.append(f"{field} {ref.path} has a '..' component, which no hostPath may have")
        elif not any(under_prefix(ref.path, prefix) for prefix in allowed):
            out.append(f"{field} {ref.path} is not under an allowed hostPath prefix "
                       f"({setting('allowed_host_path_prefixes', allowed)})")
    return out


# ------------------------------------------------------------------ image


def repository(image: str) -> str:
    """The image without its tag or digest: registry:5000/team/trainer:1 -> registry:5000/
    team/trainer (a colon before the last slash is a registry's port)."""
    name = image.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


def image_allowed(image: str, prefixes: list[str]) -> bool:
    return ANY_IMAGE in prefixes or any(
        image == p or (image.startswith(p) and (p[-1] in IMAGE_SEPARATORS or
                                                image[len(p)] in IMAGE_SEPARATORS))
        for p in prefixes if p)


def _image(spec: ResNet50TrainingSpec, settings: OperatorSettings) -> list[str]:
    # Unset: the operator's own trainer image. Its repository stays allowed with any tag,
    # so that trainings can pin a version of the image the admin deployed.
    own = repository(settings.trainer_image)
    if spec.image is None or image_allowed(spec.image, [own, *settings.allowed_image_prefixes]):
        return []
    return [f"spec.image {spec.image} is outside the trainer image's repository {own} and "
            f"every allowed image prefix "
            f"({setting('allowed_image_prefixes', settings.allowed_image_prefixes)})"]


# ------------------------------------------------------------------ env, tolerations, size


def _secret_env(spec: ResNet50TrainingSpec, settings: OperatorSettings) -> list[str]:
    # The pod may read any Secret of its namespace, whoever created the training. Other
    # sources (configMapKeyRef, fieldRef, resourceFieldRef) are passed on as given.
    if settings.allow_secret_env:
        return []
    out = []
    for i, env in enumerate(spec.env):
        ref = (env.value_from or {}).get("secretKeyRef")
        if ref is None:
            continue
        secret = ref.get("name") if isinstance(ref, dict) else None
        out.append(f"spec.env[{i}].valueFrom.secretKeyRef ({env.name} from Secret "
                   f"{secret or '(unnamed)'}) reads a Secret, which trainings may not "
                   f"({setting('allow_secret_env', False)})")
    return out


def broad(toleration: dict[str, Any]) -> str | None:
    """What a toleration lets the pods onto that they should not reach, or None."""
    key = toleration.get("key") or ""
    if not key and toleration.get("operator") == "Exists":
        return "tolerates every taint"
    if key in PROTECTED_TAINTS:
        return f"tolerates the taint {key}"
    return None


def _tolerations(spec: ResNet50TrainingSpec, settings: OperatorSettings) -> list[str]:
    if settings.allow_broad_tolerations:
        return []
    out = []
    for i, toleration in enumerate(spec.scheduling.tolerations):
        if why := broad(toleration):
            out.append(f"spec.scheduling.tolerations[{i}] "
                       f"{json.dumps(toleration, separators=(', ', ': '))} {why}, which "
                       f"trainings may not ({setting('allow_broad_tolerations', False)})")
    return out


def _size(spec: ResNet50TrainingSpec, settings: OperatorSettings) -> list[str]:
    out = []
    if spec.nodes > settings.max_nodes:
        out.append(f"spec.nodes {spec.nodes} is more pods than a training may have "
                   f"({setting('max_nodes', settings.max_nodes)})")
    gpus = spec.nodes * spec.gpus_per_node
    if gpus > settings.max_gpus_per_training:
        out.append(f"spec.nodes x spec.gpusPerNode = {spec.nodes} x {spec.gpus_per_node} = "
                   f"{gpus} GPUs is more than a training may have "
                   f"({setting('max_gpus_per_training', settings.max_gpus_per_training)})")
    return out
