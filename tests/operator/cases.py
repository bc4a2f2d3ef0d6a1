"""Builders of ResNet50Training objects for the operator tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from resnet50_operator.render import Training, parse_training

EXAMPLES = Path(__file__).parents[2] / "manifests" / "examples"


def training(spec: dict[str, Any] | None = None, name: str = "r50", **overrides: Any) -> Training:
    body_spec = {"nodes": 2, "gpusPerNode": 8, "dataset": {"persistentVolumeClaim":
                                                          {"claimName": "imagenet"}}}
    body_spec.update(copy.deepcopy(spec or {}))
    body_spec.update(overrides)
    return parse_training({"metadata": {"name": name, "namespace": "ml", "uid": "uid-1"},
                           "spec": body_spec})


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
