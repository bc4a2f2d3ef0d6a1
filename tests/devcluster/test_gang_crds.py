"""The gang schedulers' PodGroup CRDs (hack/gang-crds.sh) install on the test control plane
and validate PodGroups server-side: what a test of rendered PodGroups can rely on."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster.controlplane import ControlPlane, binaries_available
from devcluster.gangcrds import crd_files, crds_available

pytestmark = pytest.mark.cluster

# (group, version, plural) and a valid PodGroup of each scheduler.
PODGROUPS = {
    "coscheduling": (("scheduling.x-k8s.io", "v1alpha1", "podgroups"),
                     {"minMember": 2, "minResources": {"nvidia.com/gpu": "16"},
                      "scheduleTimeoutSeconds": 60}),
    "volcano": (("scheduling.volcano.sh", "v1beta1", "podgroups"),
                {"minMember": 2, "minResources": {"nvidia.com/gpu": "16"},
                 "queue": "default"}),
}


@pytest.fixture(scope="module")
def custom_objects() -> Iterator[client.CustomObjectsApi]:
    reason = binaries_available() or crds_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI fetches them first: their absence there is a bug
        pytest.skip(reason)
    with ControlPlane(crds=list(crd_files().values())) as cp:
        yield client.CustomObjectsApi(cp.api_client())


def dry_run(api: client.CustomObjectsApi, scheduler: str, spec: dict) -> dict:
    (group, version, plural), _ = PODGROUPS[scheduler]
    body = {"apiVersion": f"{group}/{version}", "kind": "PodGroup",
            "metadata": {"name": "training-x"}, "spec": spec}
    return api.create_namespaced_custom_object(group, version, "default", plural, body,
                                               dry_run="All")


@pytest.mark.parametrize("scheduler", sorted(PODGROUPS))
def test_a_valid_podgroup_passes_a_server_side_dry_run(custom_objects, scheduler):
    _, spec = PODGROUPS[scheduler]
    made = dry_run(custom_objects, scheduler, spec)
    assert made["spec"]["minMember"] == 2
    assert made["metadata"]["uid"]  # the apiserver's answer, not our body


@pytest.mark.parametrize("scheduler", sorted(PODGROUPS))
def test_the_schema_refuses_a_podgroup_of_the_wrong_shape(custom_objects, scheduler):
    _, spec = PODGROUPS[scheduler]
    with pytest.raises(ApiException) as refused:
        dry_run(custom_objects, scheduler, {**spec, "minMember": "two"})
    assert refused.value.status == 422
    assert "spec.minMember" in refused.value.body
