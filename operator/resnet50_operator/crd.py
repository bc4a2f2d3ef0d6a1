"""The CustomResourceDefinition, generated from the pydantic models of spec.py.

`python -m resnet50_operator.crd > manifests/crd/resnet50trainings.yaml` writes it; a test
fails when the committed file differs from what this module generates.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from resnet50_operator import spec as s

# Kept by the conversion; everything else pydantic emits (title, $defs, ...) is dropped.
_KEPT = ("type", "description", "default", "enum", "minimum", "maximum", "exclusiveMinimum",
         "exclusiveMaximum", "minLength", "maxLength", "maxItems", "pattern", "format",
         "x-kubernetes-validations")

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready",
     "description": "Nodes whose pod is running, of all nodes"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
    {"name": "Epoch", "type": "string", "jsonPath": ".status.training.epoch"},
    {"name": "Top-1", "type": "number", "jsonPath": ".status.training.top1",
     "description": "Acc@1 of the last evaluation, percent"},
    {"name": "Img/s", "type": "integer", "jsonPath": ".status.training.imagesPerSecond"},
    {"name": "ETA", "type": "string", "jsonPath": ".status.training.eta"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            if "description" in target:  # the type's own text says more than the field's
                extra.pop("description", None)
            return _resolve({**target, **extra}, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def structural(node: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema node as a Kubernetes structural schema node."""
    node = dict(node)
    branches = node.pop("anyOf", None)
    if branches:  # Optional[X] is anyOf[X, null]: the field is simply not required
        real = [b for b in branches if b.get("type") != "null"]
        if len(real) != 1:
            raise ValueError(f"cannot express anyOf {branches} in a structural schema")
        node = {**real[0], **node}
    if node.get("default") in (None, ""):  # says nothing that leaving the field out does not
        node.pop("default", None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:  # JSON Schema's number; OpenAPI v3.0 wants the limit plus a flag
            node[limit], node[bound] = node[bound], True
    out = {k: v for k, v in node.items() if k in _KEPT}
    if "x-kubernetes-validations" in out:  # pydantic sorts their keys; the rule reads first
        out["x-kubernetes-validations"] = [
            {k: rule[k] for k in ("rule", "messageExpression", "message", "fieldPath") if k in rule}
            for rule in out["x-kubernetes-validations"]]
    kind = node.get("type")
    if kind is None and "enum" in out:
        out["type"] = "string"
    if kind == "object" or "properties" in node:
        out["type"] = "object"
        if "properties" in node:
            required = node.get("required", [])
            out["properties"] = {}
            for name, child in node["properties"].items():
                out["properties"][name] = structural(child)
                if _always_present_section(child) and name not in required:
                    # The apiserver then fills in the section's defaults too, so that
                    # `kubectl get -o yaml` shows every value the operator will use.
                    out["properties"][name]["default"] = {}
            if required:
                out["required"] = required
        additional = node.get("additionalProperties")
        if isinstance(additional, dict) and additional:
            out["additionalProperties"] = structural(additional)
        elif "properties" not in node:  # free-form (affinity, env entries): kept as given
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(node.get("items", {"type": "object"}))
    return out


def _always_present_section(node: dict[str, Any]) -> bool:
    """An object field that pydantic fills with its model's defaults (not Optional)."""
    return "properties" in node and "anyOf" not in node and node.get("type", "object") == "object"


def openapi_schema(model: type[s._Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return structural(_resolve(raw, raw.get("$defs", {})))


def build_crd() -> dict[str, Any]:
    spec_schema = openapi_schema(s.ResNet50TrainingSpec)
    spec_schema["description"] = "The desired training. Every field: kubectl explain r50t.spec"
    status_schema = openapi_schema(s.ResNet50TrainingStatus)
    status_schema["description"] = "What the operator observed; written by the operator only."
    status_schema.pop("default", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{s.PLURAL}.{s.GROUP}"},
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {"kind": s.KIND, "plural": s.PLURAL, "singular": s.SINGULAR,
                      "shortNames": s.SHORT_NAMES, "categories": ["all", "training"]},
            "versions": [{
                "name": s.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "Trains ResNet50 on ImageNet with the bundled DDP trainer, "
                                   "one pod per node, restarted as a group from checkpoints.",
                    "required": ["spec"],
                    **s.validations(s.cel(f"self.metadata.name.size() <= {s.MAX_NAME_LENGTH}",
                                          f"metadata.name: {s.NAME_LENGTH_LIMIT}")),
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


def render_yaml() -> str:
    header = "# Generated by `python -m resnet50_operator.crd` from spec.py: do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
