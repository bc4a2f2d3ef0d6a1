"""spec.podTemplate against a real kube-apiserver: the fast-network example's pods are
valid Pods, and a template the Pod schema refuses fails the training, before any pod
exists, naming the template's own fields."""

from __future__ import annotations

import pytest
from kube import create_training, example, get_training, wait_for
from kubernetes import client

from resnet50_operator.render import parse_training, render_all
from resnet50_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster


def test_the_infiniband_examples_pods_pass_the_apiservers_validation(api, namespace):
    body = example("resnet50-16cards-infiniband")
    body["metadata"].update(namespace=namespace, uid="0")
    service, *pods = render_all(parse_training(body), 0, OperatorSettings())
    core = client.CoreV1Api(api)
    for pod in pods:
        created = core.create_namespaced_pod(namespace, pod, dry_run="All")
        trainer = created.spec.containers[0]
        assert trainer.resources.limits["rdma/rdma_shared_device_a"] == "1"
        assert trainer.security_context.capabilities.add == ["IPC_LOCK"]
        assert created.metadata.annotations["k8s.v1.cni.cncf.io/networks"] == "ib-sriov"
    core.create_namespaced_service(namespace, service, dry_run="All")


def test_a_template_the_pod_schema_refuses_fails_the_training_and_creates_no_pod(
        api, namespace, operator):
    body = {"apiVersion": "resnet50.dev/v1alpha1", "kind": "ResNet50Training",
            "metadata": {"name": "r50"},
            "spec": {"nodes": 2, "gpusPerNode": 8,
                     "dataset": {"persistentVolumeClaim": {"claimName": "imagenet"}},
                     "podTemplate": {"spec": {
                         "dnsPolicy": "Sometimes",
                         "containers": [{"name": "log-shipper"}]}}}}  # no image
    create_training(api, namespace, body)

    def failed():
        status = get_training(api, namespace, "r50").get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Failed"), None)

    condition = wait_for("the training to fail", failed)
    assert condition["reason"] == "InvalidSpec"
    message = condition["message"]
    assert "spec.podTemplate.spec.containers[log-shipper].image: Required value" in message
    assert "spec.podTemplate.spec.dnsPolicy: Unsupported value: \"Sometimes\"" in message
    assert client.CoreV1Api(api).list_namespaced_pod(namespace).items == []
