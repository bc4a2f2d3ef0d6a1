"""Operator-wide settings: one model, read from RESNET50_OPERATOR_* environment variables."""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping

from pydantic import BaseModel, Field, field_validator

ENV_PREFIX = "RESNET50_OPERATOR_"
# An allowed image prefix that allows every image.
ANY_IMAGE = "*"


class OperatorSettings(BaseModel):
    trainer_image: str = Field("resnet50-operator/trainer:0.1.0",
                               description="Image of trainings whose spec.image is unset.")
    reconcile_interval_seconds: float = Field(5.0, gt=0, description="How often the sweep "
                                              "looks for trainings that time alone changes "
                                              "(a back-off, a deadline, a TTL, a progress "
                                              "read).")
    resync_interval_seconds: float = Field(60.0, gt=0, description="How often each training "
                                           "is compared with its pods even when nothing "
                                           "happened (pods stuck terminating, a missed "
                                           "event).")
    rendezvous_port: int = Field(29500, ge=1, le=65535, description="Port of the DDP "
                                 "rendezvous on the master pod.")
    metrics_port: int = Field(9402, ge=1, le=65535, description="Port of the trainer's "
                              "progress endpoint (Prometheus text) in the master pod.")
    progress_interval_seconds: float = Field(15.0, gt=0, description="How often the "
                                             "progress of a running training is read.")
    namespace: str | None = Field(None, description="Watch only this namespace; default: all.")
    # The admin's policy (policy.py, docs/security.md): what a training may ask for. The
    # defaults are the safe ones; an admin widens them.
    allowed_host_path_prefixes: list[str] = Field([], description="Node directories that "
                                                  "hostPath datasets and checkpoints may be "
                                                  "in; empty: no hostPath at all.")
    allowed_image_prefixes: list[str] = Field([], description="Images that spec.image may "
                                              "name besides the repository of trainer_image; "
                                              "'*': any.")
    allow_secret_env: bool = Field(False, description="Whether spec.env may read Secrets "
                                   "(valueFrom.secretKeyRef).")
    allow_broad_tolerations: bool = Field(False, description="Whether a toleration may "
                                          "tolerate every taint, or a control-plane or "
                                          "cordoned node's.")
    allow_host_network: bool = Field(False, description="Whether spec.podTemplate may put "
                                     "the pods in the node's network namespace "
                                     "(hostNetwork), as some RDMA networks need.")
    allowed_capabilities: list[str] = Field([], description="Linux capabilities that "
                                            "spec.podTemplate may add to the trainer "
                                            "(IPC_LOCK for RDMA); empty: none.")
    max_nodes: int = Field(64, ge=1, description="Most pods (spec.nodes) of one training.")
    max_gpus_per_training: int = Field(512, ge=0, description="Most GPUs (nodes x "
                                       "gpusPerNode) of one training.")

    @field_validator("allowed_host_path_prefixes")
    @classmethod
    def _absolute_paths(cls, prefixes: list[str]) -> list[str]:
        # Checked at start-up: a typo must stop the operator, not silently allow nothing.
        for prefix in prefixes:
            if not prefix.startswith("/") or re.search(r"(^|/)\.\.(/|$)", prefix):
                raise ValueError(f"{prefix!r} is not an absolute path without '..'")
        return prefixes

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorSettings:
        """A list setting is written comma-separated ("/data,/scratch"); spaces around the
        items and empty items are dropped, so "" is the empty list."""
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            is_list = typing.get_origin(field.annotation) is list
            values[name] = [i.strip() for i in raw.split(",") if i.strip()] if is_list else raw
        return cls(**values)
