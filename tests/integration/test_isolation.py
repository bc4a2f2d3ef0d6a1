"""One tenant's bad training never hurts another, and says itself what is wrong: the real
apiserver's refusals (a ResourceQuota, a missing PriorityClass or ServiceAccount, a
wrong-typed field) become the training's condition and Event, and a training whose pod
serves a hostile /metrics does not delay the others' deadlines."""

from __future__ import annotations

import time

import hostile_metrics
import pytest
from kube import (
    Operator,
    create_training,
    training_status,
    wait_for,
    wait_for_events,
    wait_phase,
)
from kubernetes import client

from devcluster.controlplane import free_port
from resnet50_operator import render
from resnet50_operator.spec import GROUP, VERSION

pytestmark = pytest.mark.cluster


def training(name: str, **spec: object) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResNet50Training",
            "metadata": {"name": name},
            "spec": {"nodes": 2, "gpusPerNode": 8, "dataset": {"hostPath": {"path": "/data"}},
                     **spec}}


def running_condition(api, namespace, name) -> dict | None:
    conditions = training_status(api, namespace, name).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Running"), None)


def wait_reason(api, namespace, name, reason) -> dict:
    def seen():
        c = running_condition(api, namespace, name)
        return c if c and c["reason"] == reason else None
    return wait_for(f"{name}: Running condition {reason}", seen, timeout=60)


def pods_of(core, namespace, name) -> list[str]:
    return sorted(p.metadata.name for p in core.list_namespaced_pod(
        namespace, label_selector=f"{render.TRAINING_LABEL}={name}").items)


def test_a_full_resource_quota_is_told_and_waited_out(api, namespace, operator):
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "compute"}, "spec": {"hard": {"pods": "1"}}})
    wait_for("the quota's usage", lambda: (core.read_namespaced_resource_quota(
        "compute", namespace).status.used or {}).get("pods") == "0")
    create_training(api, namespace, training("r50"))
    condition = wait_reason(api, namespace, "r50", "QuotaExceeded")
    assert condition["message"] == (
        f"ResourceQuota compute in namespace {namespace} refuses pod r50-1 (the 2nd of 2 pods): "
        "requested pods=1, used pods=1, limited pods=1")
    assert training_status(api, namespace, "r50")["phase"] == "Pending"
    wait_for_events(api, namespace, "r50", "QuotaExceeded")
    # room again: the missing pod is created, and the training goes on
    core.patch_namespaced_resource_quota("compute", namespace, {"spec": {"hard": {"pods": "2"}}})
    wait_for("both pods", lambda: pods_of(core, namespace, "r50") == ["r50-0", "r50-1"])
    wait_reason(api, namespace, "r50", "WaitingForPods")


def test_a_missing_priority_class_or_service_account_is_told_until_it_exists(
        api, namespace, operator):
    core, scheduling = client.CoreV1Api(api), client.SchedulingV1Api(api)
    priority = f"urgent-{namespace}"
    create_training(api, namespace, training("prio", scheduling={
        "priorityClassName": priority}))
    create_training(api, namespace, training("sa", serviceAccountName="trainer"))
    prio = wait_reason(api, namespace, "prio", "PriorityClassNotFound")
    assert prio["message"].startswith(f"PriorityClass {priority} (spec.scheduling."
                                      "priorityClassName) does not exist")
    sa = wait_reason(api, namespace, "sa", "ServiceAccountNotFound")
    assert sa["message"].startswith("ServiceAccount trainer (spec.serviceAccountName) does not "
                                    f"exist in namespace {namespace}")
    wait_for_events(api, namespace, "prio", "PriorityClassNotFound")
    wait_for_events(api, namespace, "sa", "ServiceAccountNotFound")
    scheduling.create_priority_class({"metadata": {"name": priority}, "value": 1000})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "trainer"}})
    try:
        for name in ("prio", "sa"):
            wait_for(f"{name}'s pods", lambda n=name: len(pods_of(core, namespace, n)) == 2)
    finally:
        scheduling.delete_priority_class(priority)


def test_a_wrong_typed_field_fails_the_training(api, namespace, operator):
    """The CRD keeps tolerations as free objects; the Kubernetes client's own check of the
    Pod's types refuses this one before it is sent."""
    create_training(api, namespace, training("r50", scheduling={
        "tolerations": [{"key": "gpu", "operator": "Exists", "tolerationSeconds": "soon"}]}))
    status = wait_phase(api, namespace, "r50", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert failed["message"] == (
        "the Kubernetes client refused pod r50-0: spec.tolerations.0.tolerationSeconds: Input "
        "should be a valid integer (got 'soon')")
    wait_for_events(api, namespace, "r50", "InvalidSpec")


def test_hostile_metrics_and_a_poison_training_do_not_delay_a_healthy_one(
        api, namespace, cluster, kubelet, tmp_path):
    """Four running trainings whose master's /metrics trickles (each read is cut after 3 s),
    and one the apiserver refuses, next to a healthy training with a 4 s deadline: the
    healthy one fails with DeadlineExceeded on time. (Read on the sweep, as before, the
    hostile reads alone held each sweep for 12 s.)"""
    with hostile_metrics.serving() as port:
        op = Operator(cluster, tmp_path / "operator.log", namespace=namespace, settings={
            "RENDEZVOUS_PORT": str(free_port()), "METRICS_PORT": str(port),
            "PROGRESS_INTERVAL_SECONDS": "0.5"}).start()
        try:
            four_hostile_and_a_poison_next_to_a_healthy_one(api, namespace, kubelet)
        finally:
            op.stop()


def four_hostile_and_a_poison_next_to_a_healthy_one(api, namespace, kubelet):
    core = client.CoreV1Api(api)
    hostile = [f"hostile-{i}" for i in range(4)]
    for name in hostile:
        create_training(api, namespace, training(name, nodes=1))
    create_training(api, namespace, training("poison", scheduling={
        "priorityClassName": "does-not-exist"}))
    for name in hostile:
        wait_for(f"{name}'s pod", lambda n=name: pods_of(core, namespace, n))
        kubelet.run(f"{name}-0")
        core.patch_namespaced_pod_status(f"{name}-0", namespace,
                                         {"status": {"podIP": "127.0.0.1"}})
        wait_phase(api, namespace, name, "Running")
    wait_reason(api, namespace, "poison", "PriorityClassNotFound")
    created = time.monotonic()
    create_training(api, namespace, training("healthy", runPolicy={"activeDeadlineSeconds": 4}))
    wait_phase(api, namespace, "healthy", "Failed", timeout=60, interval=0.1)
    late = time.monotonic() - created - 4
    assert late < 3, f"the healthy training's deadline was judged {late:.1f} s late"
    failed = next(c for c in training_status(api, namespace, "healthy")["conditions"]
                  if c["type"] == "Failed")
    assert failed["reason"] == "DeadlineExceeded"
