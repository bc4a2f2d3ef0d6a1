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
            *_secret_env(spec, settings), *_tolerations(spec, settings),
            *_pod_template(spec, settings)]


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


# ------------------------------------------------------------------ spec.podTemplate

_TEMPLATE = "spec.podTemplate.spec"


def _pod_template(spec: ResNet50TrainingSpec, settings: OperatorSettings) -> list[str]:
    """What the template adds is held to the same policy as the spec's own fields: the
    images of its containers, its hostPath volumes, Secrets; and the host's network and
    capabilities, which only the admin may allow."""
    pod = (spec.pod_template.spec if spec.pod_template else None) or {}
    out = []
    own = repository(settings.trainer_image)
    images = setting("allowed_image_prefixes", settings.allowed_image_prefixes)
    host_paths = setting("allowed_host_path_prefixes", settings.allowed_host_path_prefixes)
    for kind in ("containers", "initContainers"):
        for c in pod.get(kind) or []:
            image = c.get("image")
            if image and not image_allowed(image, [own, *settings.allowed_image_prefixes]):
                out.append(f"{_TEMPLATE}.{kind}[{c.get('name')}].image {image} is outside "
                           f"the trainer image's repository {own} and every allowed image "
                           f"prefix ({images})")
            if not settings.allow_secret_env and _reads_secrets(c):
                out.append(f"{_TEMPLATE}.{kind}[{c.get('name')}] reads a Secret, which "
                           f"trainings may not ({setting('allow_secret_env', False)})")
    for volume in pod.get("volumes") or []:
        field = f"{_TEMPLATE}.volumes[{volume.get('name')}]"
        if (path := (volume.get("hostPath") or {}).get("path")) is not None and not any(
                under_prefix(path, p) for p in settings.allowed_host_path_prefixes):
            out.append(f"{field}.hostPath.path {path} is not under an allowed hostPath prefix "
                       f"({host_paths})")
        if "secret" in volume and not settings.allow_secret_env:
            out.append(f"{field} mounts a Secret, which trainings may not "
                       f"({setting('allow_secret_env', False)})")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field) and (field != "hostNetwork" or not settings.allow_host_network):
            out.append(f"{_TEMPLATE}.{field} shares the node's namespace with the pods, which "
                       "trainings may not" + (f" ({setting('allow_host_network', False)})"
                                              if field == "hostNetwork" else ""))
    trainer = next((c for c in pod.get("containers") or [] if c.get("name") == "trainer"), {})
    added = ((trainer.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
    for capability in added:
        if capability not in settings.allowed_capabilities:
            out.append(f"{_TEMPLATE}.containers[trainer].securityContext.capabilities.add "
                       f"{capability} is not an allowed capability "
                       f"({setting('allowed_capabilities', settings.allowed_capabilities)})")
    return out


def _reads_secrets(container: dict[str, Any]) -> bool:
    return any("secretRef" in source for source in container.get("envFrom") or []) or any(
        "secretKeyRef" in (env.get("valueFrom") or {}) for env in container.get("env") or [])


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
