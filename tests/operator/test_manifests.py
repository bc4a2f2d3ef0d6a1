from pathlib import Path

import kubernetes_validate
import pytest
import yaml

MANIFESTS = Path(__file__).parents[2] / "manifests"


def documents(path: Path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", sorted((MANIFESTS / "operator").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_operator_manifests_are_valid_kubernetes_objects(path):
    if path.name == "kustomization.yaml":
        for resource in documents(path)[0]["resources"]:
            assert (path.parent / resource).exists(), resource
        return
    for doc in documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_runs_the_operator_image_as_its_service_account():
    (deployment,) = documents(MANIFESTS / "operator" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "resnet50-operator"
    (container,) = pod["containers"]
    assert container["image"].startswith("resnet50-operator/operator:")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_two_replicas_elect_a_leader_on_a_lease_the_rbac_grants():
    """leader.py: the Lease lives in the operator's namespace (POD_NAMESPACE) when it
    watches every namespace, and the ClusterRole lets it do what the Elector calls."""
    from resnet50_operator import leader

    (deployment,) = documents(MANIFESTS / "operator" / "deployment.yaml")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert leader.DEFAULT_NAMESPACE == deployment["metadata"]["namespace"]
    role = next(d for d in documents(MANIFESTS / "operator" / "rbac.yaml")
                if d["kind"] == "ClusterRole")
    (rule,) = (r for r in role["rules"] if "leases" in r["resources"])
    assert rule["apiGroups"] == ["coordination.k8s.io"]
    assert sorted(rule["verbs"]) == sorted(leader.VERBS)
