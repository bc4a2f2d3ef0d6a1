"""Bad inputs that the CRD accepts, each with the answer it must get from the operator
against the real apiserver: Failed with this reason (the admin's policy, a field only the
Pod schema checks) or waiting with this reason (a refusal that may pass). What the CRD
itself refuses at apply is tests/bad_specs.py's table (test_crd_rules.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from kube import Operator, create_training, training_status, wait_for, wait_for_events
from kubernetes import client

from devcluster.controlplane import ControlPlane, free_port
from resnet50_operator.spec import GROUP, VERSION

pytestmark = pytest.mark.cluster


class Adversarial(NamedTuple):
    id: str
    change: dict[str, Any]  # merged into a valid spec: 2 nodes x 8 GPUs, hostPath /data
    phase: str  # Failed, or Pending (waiting)
    condition: str  # the condition that says why: Failed, or Running (False)
    reason: str
    message: str  # a part of the condition's message


POLICY = "operator setting RESNET50_OPERATOR_"
CASES = [
    Adversarial("host-root", {"checkpoint": {"hostPath": {"path": "/"}}}, "Failed", "Failed",
                "NotAllowed", "spec.checkpoint.hostPath.path / is not under an allowed "
                f"hostPath prefix ({POLICY}ALLOWED_HOST_PATH_PREFIXES: /data)"),
    Adversarial("host-etc", {"dataset": {"hostPath": {"path": "/etc"}}}, "Failed", "Failed",
                "NotAllowed", "spec.dataset.hostPath.path /etc is not under"),
    Adversarial("host-sibling", {"dataset": {"hostPath": {"path": "/database"}}}, "Failed",
                "Failed", "NotAllowed", "spec.dataset.hostPath.path /database is not under"),
    Adversarial("any-image", {"image": "evil.example.com/miner:1"}, "Failed", "Failed",
                "NotAllowed", "spec.image evil.example.com/miner:1"),
    Adversarial("secret-env", {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "admin-token", "key": "token"}}}]}, "Failed", "Failed", "NotAllowed",
        f"{POLICY}ALLOW_SECRET_ENV: false"),
    Adversarial("every-taint", {"scheduling": {"tolerations": [{"operator": "Exists"}]}},
                "Failed", "Failed", "NotAllowed", f"{POLICY}ALLOW_BROAD_TOLERATIONS: false"),
    Adversarial("control-plane", {"scheduling": {"tolerations": [{
        "key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}, "Failed",
        "Failed", "NotAllowed", f"{POLICY}ALLOW_BROAD_TOLERATIONS: false"),
    Adversarial("too-many-nodes", {"nodes": 1024}, "Failed", "Failed", "NotAllowed",
                f"{POLICY}MAX_NODES: 64"),
    Adversarial("too-many-gpus", {"nodes": 40, "gpusPerNode": 16}, "Failed", "Failed",
                "NotAllowed", f"{POLICY}MAX_GPUS_PER_TRAINING: 512"),
    Adversarial("toleration-type", {"scheduling": {"tolerations": [{
        "key": "gpu", "operator": "Exists", "tolerationSeconds": "soon"}]}}, "Failed",
        "Failed", "InvalidSpec", "tolerationSeconds: Input should be a valid integer"),
    Adversarial("toleration-operator", {"scheduling": {"tolerations": [{
        "key": "gpu", "operator": "Sometimes"}]}}, "Failed", "Failed", "InvalidSpec",
        'spec.tolerations[0].operator: Unsupported value: "Sometimes"'),
    Adversarial("affinity-type", {"scheduling": {"affinity": {"nodeAffinity": "gpu"}}},
                "Failed", "Failed", "InvalidSpec", "the Kubernetes client refused pod"),
    Adversarial("env-source-type", {"env": [{"name": "ME", "valueFrom": {
        "fieldRef": "metadata.name"}}]}, "Failed", "Failed", "InvalidSpec",
        "the Kubernetes client refused pod"),
    Adversarial("no-priority-class", {"scheduling": {"priorityClassName": "urgent"}},
                "Pending", "Running", "PriorityClassNotFound", "PriorityClass urgent"),
    Adversarial("no-service-account", {"serviceAccountName": "ghost"}, "Pending", "Running",
                "ServiceAccountNotFound", "ServiceAccount ghost (spec.serviceAccountName)"),
    Adversarial("no-such-node", {"scheduling": {"nodeSelector": {"gpu": "b300"}}}, "Pending",
                "Running", "Unschedulable", "didn't match Pod's node affinity/selector"),
]


@pytest.fixture(scope="module")
def shared(cluster: ControlPlane, tmp_path_factory) -> Iterator[tuple[client.ApiClient, str]]:
    """One namespace and one operator, with the default policy but for /data, for every
    case: each case is its own training."""
    namespace = f"adv-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(namespace)
    op = Operator(cluster, tmp_path_factory.mktemp("adversarial") / "operator.log",
                  namespace=namespace, settings={"RENDEZVOUS_PORT": str(free_port()),
                                                 "ALLOWED_HOST_PATH_PREFIXES": "/data"}).start()
    api = cluster.api_client()
    yield api, namespace
    op.stop()
    core = client.CoreV1Api(api)
    core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    core.delete_namespace(namespace)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_gets_its_answer(shared, case):
    api, namespace = shared
    spec = {"nodes": 2, "gpusPerNode": 8, "dataset": {"hostPath": {"path": "/data"}},
            **case.change}
    create_training(api, namespace, {"apiVersion": f"{GROUP}/{VERSION}",
                                     "kind": "ResNet50Training",
                                     "metadata": {"name": case.id}, "spec": spec})

    def answered():
        status = training_status(api, namespace, case.id)
        found = next((c for c in status.get("conditions", [])
                      if c["type"] == case.condition and c["reason"] == case.reason), None)
        return (status, found) if found else None

    status, condition = wait_for(f"{case.id}: {case.condition} {case.reason}", answered)
    assert status["phase"] == case.phase
    assert case.message in condition["message"]
    wait_for_events(api, namespace, case.id, case.reason)
    if case.phase == "Failed":  # nothing of it was created
        pods = client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=f"resnet50.dev/training={case.id}").items
        assert pods == []
