"""The network (torchvision, no pretrained weights) and its moving average."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.errors import ConfigError


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if cfg.model not in names:
        raise ConfigError(f"--model {cfg.model!r} is not a torchvision classification model")
    kwargs = {"zero_init_residual": True} if cfg.zero_init_residual else {}
    try:
        return torchvision.models.get_model(cfg.model, weights=None, num_classes=num_classes,
                                            **kwargs)
    except TypeError as exc:  # an option the chosen architecture does not have
        raise ConfigError(f"--model {cfg.model}: {exc}") from None


def build_ema(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int, world_size: int,
              device: torch.device) -> AveragedModel | None:
    """torchvision's EMA: the decay is given per epoch-normalised step, so the average
    spans the same share of training whatever the batch size, world size and epochs."""
    if not cfg.model_ema:
        return None
    batch = cfg.per_process_batch(world_size)
    adjust = world_size * batch * cfg.model_ema_steps / cfg.epochs
    alpha = min(1.0, (1.0 - cfg.model_ema_decay) * adjust)
    return AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(1.0 - alpha),
                         use_buffers=True)
