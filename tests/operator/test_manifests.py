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
