"""spec.scheduling.gang against a real kube-apiserver: a gang scheduler that is not
installed holds the pods back and says so; the PodGroups of Volcano and coscheduling, as
rendered, are valid objects of their real CRDs (hack/gang-crds.sh) and created before the
pods; a PodGroup's own reason reaches the training's status. Neither scheduler runs here:
the PodGroup's status is written by the test, as Volcano's controller would. Kueue's own
tests, with its controller running: tests/e2e/test_gang_admission.py."""

from __future__ import annotations

import os

import pytest
import yaml
from kube import create_training, events, training_status, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster.gangcrds import crd_files, crds_available

pytestmark = pytest.mark.cluster


def gang_training(mode: str, **gang: object) -> dict:
    return {"apiVersion": "resnet50.dev/v1alpha1", "kind": "ResNet50Training",
            "metadata": {"name": "r50"},
            "spec": {"nodes": 2, "gpusPerNode": 8,
                     "dataset": {"persistentVolumeClaim": {"claimName": "imagenet"}},
                     "scheduling": {"gang": {"mode": mode, **gang}}}}


def running_condition(api, namespace: str) -> dict:
    conditions = training_status(api, namespace, "r50").get("conditions") or []
    return next((c for c in conditions if c["type"] == "Running"), {})


def test_a_gang_scheduler_that_is_not_installed_holds_the_pods_and_says_so(
        api, namespace, operator):
    create_training(api, namespace, gang_training("kueue", queue="team-a"))
    held = wait_for("GangSchedulerMissing", lambda: (
        c := running_condition(api, namespace)).get("reason") == "GangSchedulerMissing" and c)
    assert held["message"] == (
        "gang mode kueue, but Kueue is not installed: this cluster serves no "
        "kueue.x-k8s.io/v1beta2 localqueues; install it, or set spec.scheduling.gang.mode "
        "to another mode or none")
    assert "GangSchedulerMissing" in [e.reason for e in events(api, namespace, "r50")]
    assert client.CoreV1Api(api).list_namespaced_pod(namespace).items == []


@pytest.fixture(scope="module")
def gang_crds(cluster) -> None:
    """The Volcano and coscheduling PodGroup CRDs, installed once in the session's cluster."""
    reason = crds_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # make test fetches them first
        pytest.skip(reason)
    extensions = client.ApiextensionsV1Api(cluster.api_client())
    for path in crd_files().values():
        for crd in (d for d in yaml.safe_load_all(path.read_text()) if d):
            try:
                extensions.create_custom_resource_definition(crd)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            wait_for(f"{crd['metadata']['name']} established", lambda name=crd["metadata"][
                "name"]: any(c.type == "Established" and c.status == "True" for c in (
                    extensions.read_custom_resource_definition(name).status.conditions or [])))


@pytest.mark.parametrize(("mode", "api_version", "gang", "expected"), [
    ("volcano", ("scheduling.volcano.sh", "v1beta1"), {"queue": "research"},
     {"minMember": 2, "minResources": {"nvidia.com/gpu": "16"}, "queue": "research"}),
    ("coscheduling", ("scheduling.x-k8s.io", "v1alpha1"), {"scheduleTimeoutSeconds": 90},
     {"minMember": 2, "minResources": {"nvidia.com/gpu": "16"},
      "scheduleTimeoutSeconds": 90}),
])
def test_the_podgroup_is_created_before_the_pods_and_valid_for_its_crd(
        api, namespace, operator, gang_crds, mode, api_version, gang, expected):
    create_training(api, namespace, gang_training(mode, **gang))
    pods = wait_for("the pods", lambda: len(items := client.CoreV1Api(api).list_namespaced_pod(
        namespace).items) == 2 and items)
    group = client.CustomObjectsApi(api).get_namespaced_custom_object(
        *api_version, namespace, "podgroups", "r50")
    assert {k: group["spec"][k] for k in expected} == expected
    assert group["metadata"]["ownerReferences"][0]["name"] == "r50"
    if mode == "volcano":
        assert all(p.spec.scheduler_name == "volcano" and p.metadata.annotations[
            "scheduling.k8s.io/group-name"] == "r50" for p in pods)
    else:
        assert all(p.metadata.labels["scheduling.x-k8s.io/pod-group"] == "r50" for p in pods)


def test_volcanos_reason_for_an_unschedulable_group_reaches_the_status(
        api, namespace, operator, gang_crds):
    create_training(api, namespace, gang_training("volcano"))
    wait_for("the pods", lambda: len(client.CoreV1Api(api).list_namespaced_pod(
        namespace).items) == 2)
    message = "2/2 tasks in gang unschedulable: pod group is not ready, 2 Pending, 2 minAvailable"
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "scheduling.volcano.sh", "v1beta1", namespace, "podgroups", "r50",
        {"status": {"phase": "Pending", "conditions": [{
            "type": "Unschedulable", "status": "True", "reason": "NotEnoughResources",
            "message": message, "transitionID": "1"}]}})
    held = wait_for("NotEnoughResources", lambda: (
        c := running_condition(api, namespace)).get("reason") == "NotEnoughResources" and c)
    assert held["message"] == f"PodGroup r50: {message}"
