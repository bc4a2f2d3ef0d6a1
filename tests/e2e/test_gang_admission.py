"""Gang admission through the real Kueue (v0.17, built by hack/kueue/build.sh): trainings
through the operator, Kueue's manager and webhooks on the control plane, pods run as real
trainer processes on two simulated nodes of 8 GPUs (devcluster/nodesim.py).

The trainings run on the CPU (there are no GPUs here) and request the simulated GPUs
through spec.podTemplate, so that Kueue's quota counts them: each is 2 pods x 8 GPUs, a
ClusterQueue holds 16. nodesim runs every pod on this machine's network, as pods on the
host network share their node's: the trainings say hostNetwork, which gives each its own
rendezvous and metrics ports, so a training starting while a preempted one still saves
does not meet its ports.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube import Operator, create_training, events, training_status, wait_for
from kubernetes import client

from devcluster.controlplane import ControlPlane, binaries_available, free_port
from devcluster.kueue import Kueue, kueue_available
from devcluster.nodesim import NodeSimulator
from resnet50_operator import crd
from resnet50_operator.spec import GROUP, VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.kueue]
KUEUE = ("kueue.x-k8s.io", "v1beta2")
TIMEOUT = 300
RESUMED = re.compile(r"Resumed from \S+ \(epoch \d+ done, step (\d+)")


class Cluster:
    def __init__(self, cp: ControlPlane, sim: NodeSimulator, operator: Operator) -> None:
        self.cp, self.sim, self.operator = cp, sim, operator
        self.api = cp.api_client()
        self.core = client.CoreV1Api(self.api)
        self.objects = client.CustomObjectsApi(self.api)

    def kueue_object(self, plural: str, kind: str, name: str, spec: dict[str, Any],
                     namespace: str | None = None) -> None:
        body = {"apiVersion": "/".join(KUEUE), "kind": kind, "metadata": {"name": name},
                "spec": spec}
        if namespace:
            self.objects.create_namespaced_custom_object(*KUEUE, namespace, plural, body)
        else:
            self.objects.create_cluster_custom_object(*KUEUE, plural, body)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    reason = binaries_available() or kueue_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI builds both first: their absence there is a bug
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("kueue-e2e")
    with ControlPlane(node_monitor_grace_period="1h", crds=[crd.build_crd()]) as cp, \
            Kueue(cp), NodeSimulator(cp.api_client(), work / "nodes", nodes=2, gpus=8) as sim:
        cp.create_namespace("resnet50-operator")  # its leader election's Lease: cluster-wide
        operator = Operator(cp, work / "operator.log", settings={
            "RENDEZVOUS_PORT": str(free_port()), "ALLOW_HOST_NETWORK": "true",
            "RESYNC_INTERVAL_SECONDS": "2"}).start()
        shared = Cluster(cp, sim, operator)
        shared.kueue_object("resourceflavors", "ResourceFlavor", "default-flavor", {})
        for name, value in (("low", 100), ("high", 1000)):
            client.SchedulingV1Api(shared.api).create_priority_class(
                {"metadata": {"name": name}, "value": value})
        try:
            yield shared
        finally:
            operator.stop()


def queue(cluster: Cluster, namespace: str, preempt: bool = False) -> None:
    """LocalQueue "trainings" of a ClusterQueue with 16 GPUs (and CPU and memory to spare)."""
    cluster.cp.create_namespace(namespace)
    quota = {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "16"}
    spec: dict[str, Any] = {"namespaceSelector": {}, "resourceGroups": [{
        "coveredResources": list(quota), "flavors": [{"name": "default-flavor", "resources": [
            {"name": r, "nominalQuota": q} for r, q in quota.items()]}]}]}
    if preempt:
        spec["preemption"] = {"withinClusterQueue": "LowerPriority"}
    cluster.kueue_object("clusterqueues", "ClusterQueue", namespace, spec)
    cluster.kueue_object("localqueues", "LocalQueue", "trainings", {"clusterQueue": namespace},
                         namespace)


def training(name: str, checkpoints: Path, epochs: int, priority: str | None = None) -> dict:
    """2 pods x 8 simulated GPUs in queue "trainings"; the cpu-smoke preset (32 px synthetic
    images) at batch 2, 32 steps an epoch, reported at each step."""
    scheduling: dict[str, Any] = {"gang": {"mode": "kueue", "queue": "trainings"}}
    if priority:
        scheduling["priorityClassName"] = priority
    gpus = {"nvidia.com/gpu": "8"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ResNet50Training",
        "metadata": {"name": name},
        "spec": {
            "nodes": 2, "gpusPerNode": 0, "processesPerNode": 1,
            "resources": {"cpu": "1", "memory": "2Gi"},
            "dataset": {"synthetic": True},
            "checkpoint": {"hostPath": {"path": str(checkpoints)}},
            "training": {"preset": "cpu-smoke", "epochs": epochs, "batchSize": 2,
                         "printFreq": 1},
            "restartPolicy": {"maxRestarts": 0},  # any counted restart fails the test
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
            "scheduling": scheduling,
            "podTemplate": {"spec": {"hostNetwork": True, "containers": [
                {"name": "trainer", "resources": {"limits": gpus, "requests": gpus}}]}},
        },
    }


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    return training_status(cluster.api, namespace, name).get("phase")


def running_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    conditions = training_status(cluster.api, namespace, name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Running"), {})


def pods_of(cluster: Cluster, namespace: str, name: str) -> list[client.V1Pod]:
    return cluster.core.list_namespaced_pod(
        namespace, label_selector=f"resnet50.dev/training={name}").items


def test_a_second_training_waits_gated_for_the_quota_then_runs(cluster, tmp_path):
    """Two 16-GPU trainings, a queue of 16 GPUs: one runs, the other waits with no pod
    placed and says why in Kueue's words, then runs when the first has finished."""
    ns = "kueue-quota"
    queue(cluster, ns)
    create_training(cluster.api, ns, training("first", tmp_path / "ckpt", epochs=2))
    wait_for("first running", lambda: phase(cluster, ns, "first") == "Running",
             timeout=TIMEOUT)
    create_training(cluster.api, ns, training("second", tmp_path / "ckpt", epochs=1))

    waiting = wait_for("second waiting with Kueue's reason", lambda: (
        c := running_condition(cluster, ns, "second")).get("reason") == "WaitingForAdmission"
        and "insufficient unused quota for nvidia.com/gpu" in c["message"] and c,
        timeout=TIMEOUT)
    assert waiting["message"].startswith(
        "waiting for admission in Kueue LocalQueue trainings: 2 of 2 pods gated; none is "
        "placed until the whole group fits the queue's quota: couldn't assign flavors")
    second = pods_of(cluster, ns, "second")
    assert len(second) == 2 and all(p.spec.node_name is None for p in second)
    assert all("kueue.x-k8s.io/admission" in {g.name for g in p.spec.scheduling_gates or []}
               for p in second)
    assert phase(cluster, ns, "first") == "Running"
    assert "WaitingForAdmission" in [e.reason for e in events(cluster.api, ns, "second")]

    wait_for("first succeeded", lambda: phase(cluster, ns, "first") == "Succeeded",
             timeout=TIMEOUT)
    done = wait_for("second succeeded", lambda: phase(cluster, ns, "second") == "Succeeded"
                    and training_status(cluster.api, ns, "second"), timeout=TIMEOUT)
    assert (done["restarts"], done["disruptions"]) == (0, 0)


def test_a_higher_priority_training_preempts_one_that_resumes_from_its_checkpoint(
        cluster, tmp_path):
    """Kueue evicts the low-priority training for the high one: a disruption, not a failure
    (maxRestarts is 0). The low one saves the step it reached on SIGTERM, queues again as a
    new group, and once the high one is done resumes there and finishes."""
    ns = "kueue-preempt"
    queue(cluster, ns, preempt=True)
    create_training(cluster.api, ns, training("low", tmp_path / "ckpt", epochs=2,
                                              priority="low"))
    wait_for("low at step 3", lambda: "Epoch [1/2] [ 3/32]" in cluster.sim.log_text(
        ns, "low-0"), timeout=TIMEOUT)
    create_training(cluster.api, ns, training("high", tmp_path / "ckpt", epochs=1,
                                              priority="high"))

    disrupted = wait_for("low disrupted", lambda: training_status(cluster.api, ns, "low")
                         .get("disruptions") == 1 and training_status(cluster.api, ns, "low"),
                         timeout=TIMEOUT)
    assert disrupted["restarts"] == 0
    (record,) = disrupted["restartHistory"]
    assert record["disruption"] and record["reason"] == "WorkloadEvictedDueToPreempted"
    wait_for("high succeeded", lambda: phase(cluster, ns, "high") == "Succeeded",
             timeout=TIMEOUT)
    done = wait_for("low succeeded", lambda: phase(cluster, ns, "low") == "Succeeded"
                    and training_status(cluster.api, ns, "low"), timeout=TIMEOUT)

    assert (done["restarts"], done["disruptions"], done["attempt"]) == (0, 1, 1)
    resumed = RESUMED.search(cluster.sim.log_text(ns, "low-0"))
    assert resumed and int(resumed.group(1)) >= 3, "the low training did not resume"
    reasons = [e.reason for e in events(cluster.api, ns, "low")]
    assert "Disrupted" in reasons and "Restarting" not in reasons
