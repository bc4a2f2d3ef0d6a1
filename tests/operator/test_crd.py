from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from resnet50_operator import crd, spec

CRD_FILE = Path(__file__).parents[2] / "manifests" / "crd" / "resnet50trainings.yaml"


def test_committed_crd_is_the_generated_one():
    assert CRD_FILE.read_text() == crd.render_yaml(), (
        "manifests/crd is stale: python -m resnet50_operator.crd > " + str(CRD_FILE.name))


def test_crd_is_a_valid_customresourcedefinition():
    kubernetes_validate.validate(crd.build_crd(), kubernetes_validate.latest_version(),
                                 strict=True)


def _walk(node, path="spec"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural():
    """Every node has a type (or keeps unknown fields), nothing pydantic-only remains."""
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"]):
        assert "type" in node, path
        assert not {"$ref", "anyOf", "title", "$defs", "additionalProperties"} & (
            node.keys() - {"additionalProperties"} if node.get("type") == "object" and
            "properties" not in node else node.keys()), path
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["rule"] and rule["message"], path


def test_every_spec_field_is_described():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"]):
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_limits_and_defaults_come_from_the_model():
    props = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    s = props["spec"]["properties"]
    assert s["nodes"]["minimum"] == 1
    assert (s["gpusPerNode"]["minimum"], s["gpusPerNode"]["maximum"]) == (0, 16)
    assert s["gpuResourceName"]["default"] == "nvidia.com/gpu"
    assert s["restartPolicy"]["properties"]["maxRestarts"]["default"] == 3
    assert s["training"]["properties"]["precision"]["enum"] == ["fp32", "amp", "bf16"]
    assert "amp-16cards" in s["training"]["properties"]["preset"]["enum"]
    assert s["env"]["items"]["required"] == ["name"]
    assert s["env"]["items"]["properties"]["valueFrom"]["x-kubernetes-preserve-unknown-fields"]
    assert s["env"]["maxItems"] == 128


def test_cel_rules_come_from_the_model_with_their_messages():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    s = schema["properties"]["spec"]["properties"]
    dataset_rules = s["dataset"]["x-kubernetes-validations"]
    assert [r["message"] for r in dataset_rules] == [spec.MSG_SYNTHETIC_TAKES_NO_VOLUME,
                                                     spec.MSG_DATASET_SOURCE]
    for quantity in (s["shmSize"], s["resources"]["properties"]["memory"]):
        assert quantity["x-kubernetes-validations"][0]["message"] == spec.MSG_QUANTITY
        assert quantity["maxLength"] == 64  # bounds the rule's cost, which the apiserver checks
    assert s["image"]["x-kubernetes-validations"][0]["message"] == spec.MSG_IMAGE
    extra_args = s["training"]["properties"]["extraArgs"]
    assert (extra_args["maxItems"], extra_args["items"]["maxLength"]) == (128, 512)  # the cost
    (option_rule,) = extra_args["items"]["x-kubernetes-validations"]
    assert option_rule["message"] == spec.MSG_OPERATOR_OPTION
    assert "messageExpression" in option_rule  # names the option and its spec field
    (name_rule,) = schema["x-kubernetes-validations"]
    assert name_rule["rule"] == "self.metadata.name.size() <= 56"


def test_sections_are_explained_by_their_own_description():
    props = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    dataset = props["spec"]["properties"]["dataset"]["description"]
    assert "Set exactly one of persistentVolumeClaim, hostPath and nfs" in dataset


def test_names_and_printer_columns():
    body = crd.build_crd()["spec"]
    assert body["names"]["shortNames"] == ["r50t"] and body["scope"] == "Namespaced"
    version = body["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase", "Ready", "GPUs", "Epoch", "Top-1", "Img/s", "ETA", "Restarts", "Age"]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if not column["jsonPath"].startswith(".status."):
            continue
        node = schema
        for field in column["jsonPath"].split(".")[1:]:
            node = node["properties"][field] if field in node.get("properties", {}) else None
            assert node is not None, f"{column['jsonPath']} is not in the schema"


@pytest.mark.parametrize("example", sorted((CRD_FILE.parents[1] / "examples").glob("*.yaml")))
def test_examples_parse_with_the_spec_model(example):
    body = yaml.safe_load(example.read_text())
    assert body["kind"] == spec.KIND
    spec.ResNet50TrainingSpec.model_validate(body["spec"])
