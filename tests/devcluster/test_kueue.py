"""Kueue's real manager (devcluster/kueue.py, built by hack/kueue/build.sh) on the test
control plane, with simulated GPU nodes (2 x 8 nvidia.com/gpu) and plain pods, no operator.

What it pins down is what the operator will rely on, in Kueue v0.17.0's words: a group of
pods waits gated until its ClusterQueue has the quota for all of it, the Workload says why,
the group runs once quota frees, and a higher-priority group preempts a lower one (how the
preempted pods are stopped, and how such a group comes back). Each test has its own
namespace and ClusterQueue; they share one control plane, Kueue and node simulator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube import wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster.controlplane import ControlPlane
from devcluster.kueue import Kueue, kueue_available
from devcluster.nodesim import NodeSimulator

pytestmark = [pytest.mark.cluster, pytest.mark.kueue]

GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
FLAVOR = "default-flavor"
GPUS_PER_POD = 8
# What Kueue v0.17.0 writes on plain pods (pkg/controller/jobs/pod).
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
TOTAL_COUNT = "kueue.x-k8s.io/pod-group-total-count"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
TOPOLOGY_GATE = "kueue.x-k8s.io/topology"  # added too while TopologyAwareScheduling is on
MANAGED = "kueue.x-k8s.io/managed"  # both a label and the pods' finalizer


class Cluster:
    """What the tests share: the control plane, Kueue and simulated nodes, and clients."""

    def __init__(self, cp: ControlPlane, kueue: Kueue, sim: NodeSimulator) -> None:
        self.cp, self.kueue, self.sim = cp, kueue, sim
        api = cp.api_client()
        self.core = client.CoreV1Api(api)
        self.objects = client.CustomObjectsApi(api)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    reason = kueue_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI builds it first: its absence there is a bug
        pytest.skip(reason)
    with ControlPlane(node_monitor_grace_period="1h") as cp, Kueue(cp) as kueue, \
            NodeSimulator(cp.api_client(), tmp_path_factory.mktemp("nodes"),
                          nodes=2, gpus=GPUS_PER_POD) as sim:
        shared = Cluster(cp, kueue, sim)
        create_cluster_object(shared, "resourceflavors", "ResourceFlavor", FLAVOR, {})
        for name, value in (("low", 100), ("high", 1000)):
            create_cluster_object(shared, "workloadpriorityclasses", "WorkloadPriorityClass",
                                  name, {"value": value})
        yield shared


# --------------------------------------------------------------------------- helpers


def create_cluster_object(cluster: Cluster, plural: str, kind: str, name: str,
                          fields: dict[str, Any]) -> None:
    cluster.objects.create_cluster_custom_object(GROUP, VERSION, plural, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, **fields})


def make_queue(cluster: Cluster, namespace: str, cluster_queue: str,
               preemption: dict[str, str] | None = None) -> None:
    """A namespace with LocalQueue "trainings" into a ClusterQueue of 16 GPUs, once Active."""
    cluster.cp.create_namespace(namespace)
    quota = {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": str(2 * GPUS_PER_POD)}
    spec: dict[str, Any] = {"namespaceSelector": {}, "resourceGroups": [{
        "coveredResources": list(quota),
        "flavors": [{"name": FLAVOR, "resources": [
            {"name": r, "nominalQuota": q} for r, q in quota.items()]}]}]}
    if preemption:
        spec["preemption"] = preemption
    create_cluster_object(cluster, "clusterqueues", "ClusterQueue", cluster_queue,
                          {"spec": spec})
    cluster.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "localqueues", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalQueue",
        "metadata": {"name": "trainings"}, "spec": {"clusterQueue": cluster_queue}})
    wait_for(f"ClusterQueue {cluster_queue} Active", lambda: condition(
        cluster.objects.get_cluster_custom_object(GROUP, VERSION, "clusterqueues",
                                                  cluster_queue), "Active", "True"))


def gpu_pod(name: str, group: str, command: list[str], *, priority: str | None = None,
            size: int = 2) -> dict[str, Any]:
    """One pod of a group of `size` pods of 8 GPUs each in queue "trainings": the labels and
    annotation Kueue's pod integration reads. nodesim runs `command` as a local process."""
    labels = {QUEUE_LABEL: "trainings", GROUP_LABEL: group}
    if priority:
        labels[PRIORITY_LABEL] = priority
    gpus = str(GPUS_PER_POD)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": {TOTAL_COUNT: str(size)}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [{
            "name": "trainer", "image": "trainer", "command": command,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": gpus},
                          "limits": {"nvidia.com/gpu": gpus}}}]},
    }


def sleeper() -> list[str]:
    return ["sleep", "300"]


def until_exists(flag: Path) -> list[str]:
    """A command that ends with exit code 0 once `flag` exists: a training that finishes."""
    return ["sh", "-c", f"until [ -e '{flag}' ]; do sleep 0.2; done"]


def create_group(cluster: Cluster, namespace: str, names: list[str], group: str,
                 command: list[str], priority: str | None = None) -> list[client.V1Pod]:
    return [cluster.core.create_namespaced_pod(
        namespace, gpu_pod(n, group, command, priority=priority)) for n in names]


def read_pod(cluster: Cluster, namespace: str, name: str) -> client.V1Pod | None:
    try:
        return cluster.core.read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def running(cluster: Cluster, namespace: str, names: list[str]) -> list[client.V1Pod] | None:
    pods = [read_pod(cluster, namespace, n) for n in names]
    return pods if all(p is not None and p.status.phase == "Running" for p in pods) else None


def gates(pod: client.V1Pod) -> set[str]:
    return {g.name for g in pod.spec.scheduling_gates or []}


def pod_condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def workload(cluster: Cluster, namespace: str, name: str,
             version: str = VERSION) -> dict[str, Any] | None:
    """The Workload of a pod group: Kueue names it after the group."""
    try:
        return cluster.objects.get_namespaced_custom_object(GROUP, version, namespace,
                                                            "workloads", name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def condition(obj: dict[str, Any] | None, kind: str, status: str) -> dict[str, Any] | None:
    """obj's condition `kind` if it has that status."""
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == kind and c["status"] == status), None)


def workload_condition(cluster: Cluster, namespace: str, name: str, kind: str,
                       status: str) -> dict[str, Any]:
    return wait_for(f"Workload {name} {kind}={status}",
                lambda: condition(workload(cluster, namespace, name), kind, status))


def clean_up(cluster: Cluster, namespace: str) -> None:
    """Free the nodes for the next test: deleting a group's Workload has Kueue delete and
    finalize its pods; finished pods, which keep no finalizer, are deleted here."""
    items = cluster.objects.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                          "workloads")["items"]
    for wl in items:
        cluster.objects.delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                        "workloads", wl["metadata"]["name"])
    cluster.core.delete_collection_namespaced_pod(namespace)
    wait_for(f"no pods left in {namespace}",
         lambda: not cluster.core.list_namespaced_pod(namespace).items)


# --------------------------------------------------------------------------- tests


def test_kueue_starts_and_converts_between_its_api_versions(cluster):
    assert cluster.kueue.startup_seconds < 60, cluster.kueue.timings
    make_queue(cluster, "kueue-conversion", "conversion")
    # Stored as v1beta2; read as v1beta1 through the conversion webhook at Kueue's port.
    old = cluster.objects.get_namespaced_custom_object(GROUP, "v1beta1", "kueue-conversion",
                                                       "localqueues", "trainings")
    assert old["apiVersion"] == f"{GROUP}/v1beta1"
    assert old["spec"]["clusterQueue"] == "conversion"


def test_a_group_waits_gated_for_quota_and_runs_when_the_first_ends(cluster, tmp_path):
    ns = "kueue-quota"
    make_queue(cluster, ns, "gpu-16")
    finish_a = tmp_path / "a-done"

    # What the mutating webhook adds to a pod of a queue, before any decision.
    created = create_group(cluster, ns, ["a-0", "a-1"], "group-a", until_exists(finish_a))
    assert gates(created[0]) == {ADMISSION_GATE, TOPOLOGY_GATE}
    assert created[0].metadata.finalizers == [MANAGED]
    assert created[0].metadata.labels[MANAGED] == "true"

    # A fits the 16 GPUs: admitted, ungated, bound, running.
    group_a = wait_for("group A running", lambda: running(cluster, ns, ["a-0", "a-1"]))
    for pod in group_a:
        assert gates(pod) == set() and pod.spec.node_name
        assert pod.metadata.labels["kueue.x-k8s.io/cluster-queue-name"] == "gpu-16"
        assert pod.metadata.labels["kueue.x-k8s.io/local-queue-name"] == "trainings"
        assert pod.metadata.annotations["kueue.x-k8s.io/workload"] == "group-a"
    admitted = workload_condition(cluster, ns, "group-a", "Admitted", "True")
    assert admitted["reason"] == "Admitted"

    # B does not fit while A holds the quota: its Workload says why, its pods stay gated.
    create_group(cluster, ns, ["b-0", "b-1"], "group-b", sleeper())
    waiting = workload_condition(cluster, ns, "group-b", "QuotaReserved", "False")
    pod_set = workload(cluster, ns, "group-b")["spec"]["podSets"][0]["name"]
    assert waiting["reason"] == "Pending"
    assert waiting["message"] == (
        f"couldn't assign flavors to pod set {pod_set}: insufficient unused quota for "
        f"nvidia.com/gpu in flavor {FLAVOR}, 16 more needed")
    for name in ("b-0", "b-1"):
        pod = read_pod(cluster, ns, name)
        assert ADMISSION_GATE in gates(pod)
        assert pod.spec.node_name is None and pod.status.phase == "Pending"
        scheduled = pod_condition(pod, "PodScheduled")
        assert (scheduled.status, scheduled.reason) == ("False", "SchedulingGated")

    # A's pods exit 0: its Workload finishes, its pods lose the finalizer, B runs.
    finish_a.touch()
    wait_for("group B running", lambda: running(cluster, ns, ["b-0", "b-1"]))
    finished = workload_condition(cluster, ns, "group-a", "Finished", "True")
    assert (finished["reason"], finished["message"]) == ("Succeeded", "Pods succeeded: 2/2.")
    for name in ("a-0", "a-1"):
        pod = wait_for(f"{name} finalized", lambda n=name: (
            lambda p: p if p.status.phase == "Succeeded" and not p.metadata.finalizers else None
        )(read_pod(cluster, ns, n)))
        assert pod.metadata.deletion_timestamp is None  # Kueue leaves finished pods be
    clean_up(cluster, ns)


def test_a_higher_priority_group_preempts_a_lower_one_which_comes_back(cluster, tmp_path):
    ns = "kueue-preemption"
    make_queue(cluster, ns, "gpu-16-preempting", {"withinClusterQueue": "LowerPriority"})
    finish_high = tmp_path / "high-done"
    create_group(cluster, ns, ["low-0", "low-1"], "low", sleeper(), priority="low")
    wait_for("the low group running", lambda: running(cluster, ns, ["low-0", "low-1"]))

    create_group(cluster, ns, ["high-0", "high-1"], "high", until_exists(finish_high),
                 priority="high")
    wait_for("the high group running", lambda: running(cluster, ns, ["high-0", "high-1"]))

    # The low group's pods: marked, deleted (so nodesim stopped them), kept by the finalizer.
    for name in ("low-0", "low-1"):
        pod = wait_for(f"{name} stopped", lambda n=name: (
            lambda p: p if p.status.phase == "Failed" else None)(read_pod(cluster, ns, n)))
        target = pod_condition(pod, "TerminationTarget")
        assert (target.status, target.reason) == ("True", "WorkloadEvictedDueToPreempted")
        assert target.message.startswith("Preempted to accommodate a workload (UID: ")
        assert target.message.endswith("due to prioritization in the ClusterQueue; preemptor "
                                       "path: /gpu-16-preempting; preemptee path: "
                                       "/gpu-16-preempting")
        assert pod.metadata.deletion_timestamp is not None
        assert pod.metadata.finalizers == [MANAGED]
    # ... and its Workload: evicted, requeued, waiting for pods to replace the deleted ones.
    for kind, reason in (("Evicted", "Preempted"), ("Preempted", "InClusterQueue"),
                         ("Requeued", "Preempted"), ("WaitingForReplacementPods", "Preempted")):
        assert workload_condition(cluster, ns, "low", kind, "True")["reason"] == reason
    assert condition(workload(cluster, ns, "low"), "QuotaReserved", "False")
    # Read as v1beta1 through the conversion webhook: the priority in its old fields.
    old = workload(cluster, ns, "low", version="v1beta1")
    assert old["spec"]["priorityClassName"] == "low"
    assert old["spec"]["priority"] == 100

    # Replacement pods of the same group (new names) are the same Workload: gated until the
    # high group ends, then admitted, and the preempted pods are finalized at last.
    create_group(cluster, ns, ["low-2", "low-3"], "low", sleeper(), priority="low")
    wait_for("the replacements gated", lambda: all(
        ADMISSION_GATE in gates(read_pod(cluster, ns, n)) for n in ("low-2", "low-3")))
    finish_high.touch()
    wait_for("the replacements running", lambda: running(cluster, ns, ["low-2", "low-3"]))
    wait_for("the preempted pods gone", lambda: read_pod(cluster, ns, "low-0") is None
         and read_pod(cluster, ns, "low-1") is None)
    assert condition(workload(cluster, ns, "low"), "Admitted", "True")
    assert [w["metadata"]["name"] for w in cluster.objects.list_namespaced_custom_object(
        GROUP, VERSION, ns, "workloads")["items"]] == ["high", "low"]
    clean_up(cluster, ns)


def test_a_preempted_group_blocks_a_group_under_a_new_name_until_its_workload_goes(
        cluster, tmp_path):
    ns = "kueue-renamed"
    make_queue(cluster, ns, "gpu-16-renamed", {"withinClusterQueue": "LowerPriority"})
    finish_high = tmp_path / "high-done"
    create_group(cluster, ns, ["old-0", "old-1"], "attempt-1", sleeper(), priority="low")
    wait_for("attempt 1 running", lambda: running(cluster, ns, ["old-0", "old-1"]))
    create_group(cluster, ns, ["high-0", "high-1"], "high", until_exists(finish_high),
                 priority="high")
    wait_for("the high group running", lambda: running(cluster, ns, ["high-0", "high-1"]))
    workload_condition(cluster, ns, "attempt-1", "Evicted", "True")

    # New pods under a new group name are a new Workload, queued behind attempt-1's...
    create_group(cluster, ns, ["new-0", "new-1"], "attempt-2", sleeper(), priority="low")
    workload_condition(cluster, ns, "attempt-2", "QuotaReserved", "False")
    finish_high.touch()
    # ... which gets the quota back although none of its pods can run again.
    workload_condition(cluster, ns, "attempt-1", "Admitted", "True")
    assert condition(workload(cluster, ns, "attempt-1"), "WaitingForReplacementPods", "True")
    assert condition(workload(cluster, ns, "attempt-2"), "QuotaReserved", "False")
    assert all(ADMISSION_GATE in gates(read_pod(cluster, ns, n)) for n in ("new-0", "new-1"))

    # Deleting the stale Workload finalizes its pods and frees the quota for attempt-2.
    cluster.objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "workloads",
                                                    "attempt-1")
    wait_for("attempt 2 running", lambda: running(cluster, ns, ["new-0", "new-1"]))
    assert read_pod(cluster, ns, "old-0") is None and read_pod(cluster, ns, "old-1") is None
    clean_up(cluster, ns)
