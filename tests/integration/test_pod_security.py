"""Pod Security admission, as admins lock namespaces down: in a namespace labelled
pod-security.kubernetes.io/enforce=restricted the operator's pods (and the operator's own)
are admitted; a training whose volumes that level forbids (hostPath, nfs) fails saying so."""

from __future__ import annotations

import pytest
import yaml
from kube import EXAMPLES, ROOT, create_training, events, example, get_training, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from resnet50_operator.render import parse_training, render_all
from resnet50_operator.settings import OperatorSettings

pytestmark = [pytest.mark.cluster, pytest.mark.parametrize(
    "namespace", [{"pod-security.kubernetes.io/enforce": "restricted",
                   "pod-security.kubernetes.io/enforce-version": "latest"}],
    indirect=True, ids=["restricted"])]


def dry_run_create(api, namespace: str, obj: dict) -> None:
    create = (client.CoreV1Api(api).create_namespaced_pod if obj["kind"] == "Pod"
              else client.CoreV1Api(api).create_namespaced_service)
    create(namespace, obj, dry_run="All")


def refused_by_restricted(body: dict) -> str | None:
    """What the restricted level refuses of an example's pods: the CPU smoke job keeps its
    checkpoints on a hostPath; the fast-network recipe adds IPC_LOCK for RDMA."""
    if any("hostPath" in (body["spec"].get(section) or {})
           for section in ("dataset", "checkpoint")):
        return 'restricted volume type \\"hostPath\\"'
    if "podTemplate" in body["spec"]:
        return 'must not include \\"IPC_LOCK\\" in securityContext.capabilities.add'
    return None


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_pods_of_every_example_pass_the_restricted_level(api, namespace, path):
    body = yaml.safe_load(path.read_text())
    body["metadata"].update(namespace=namespace, uid="0")
    objects = render_all(parse_training(body), 0, OperatorSettings())
    refused = refused_by_restricted(body)
    if refused is None:
        for obj in objects:
            dry_run_create(api, namespace, obj)
        return
    with pytest.raises(ApiException) as exc:
        dry_run_create(api, namespace, objects[1])
    assert exc.value.status == 403
    assert 'violates PodSecurity \\"restricted:latest\\"' in exc.value.body
    assert refused in exc.value.body


def test_the_operators_own_pod_passes_the_restricted_level(api, namespace):
    deployment = yaml.safe_load((ROOT / "manifests" / "operator" / "deployment.yaml").read_text())
    template = deployment["spec"]["template"]
    del template["spec"]["serviceAccountName"]  # its own namespace's; not what is checked
    dry_run_create(api, namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "resnet50-operator", **template["metadata"]}, "spec": template["spec"]})


def test_a_training_runs_in_a_restricted_namespace(api, namespace, operator, kubelet):
    """The 16-card example as shipped: its two PVCs are volumes the level admits (the
    claims need not exist for the pods to be admitted)."""
    body = example("resnet50-16cards")
    create_training(api, namespace, body)
    wait_for("both pods", lambda: len(kubelet.pods()) == 2)


def test_a_training_the_level_forbids_fails_saying_why(api, namespace, operator, kubelet):
    body = example("resnet50-cpu-smoke")
    create_training(api, namespace, body)
    name = body["metadata"]["name"]
    failed = wait_for("Failed", lambda: next(
        (c for c in get_training(api, namespace, name).get("status", {}).get("conditions", [])
         if c["type"] == "Failed"), None))
    assert failed["reason"] == "InvalidSpec"
    assert failed["message"].startswith(f"the apiserver refused pod {name}-0: ")
    assert 'violates PodSecurity "restricted:latest"' in failed["message"]
    assert 'restricted volume type "hostPath"' in failed["message"]
    # Posted after the status is written:
    reasons = wait_for("the Event", lambda: [e.reason for e in events(api, namespace, name)])
    assert reasons == ["InvalidSpec"]
    assert kubelet.pods() == []
