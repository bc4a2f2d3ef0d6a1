"""Operator-wide settings: one model, read from RESNET50_OPERATOR_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field

ENV_PREFIX = "RESNET50_OPERATOR_"


class OperatorSettings(BaseModel):
    trainer_image: str = Field("resnet50-operator/trainer:0.1.0",
                               description="Image of trainings whose spec.image is unset.")
    reconcile_interval_seconds: float = Field(5.0, gt=0, description="How often each "
                                              "training is compared with its pods.")
    rendezvous_port: int = Field(29500, ge=1, le=65535, description="Port of the DDP "
                                 "rendezvous on the master pod.")
    metrics_port: int = Field(9402, ge=1, le=65535, description="Port of the trainer's "
                              "progress endpoint (Prometheus text) in the master pod.")
    progress_interval_seconds: float = Field(15.0, gt=0, description="How often the "
                                             "progress of a running training is read.")
    namespace: str | None = Field(None, description="Watch only this namespace; default: all.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorSettings:
        values = {name: env[ENV_PREFIX + name.upper()] for name in cls.model_fields
                  if ENV_PREFIX + name.upper() in env}
        return cls(**values)
