"""SGD with per-group weight decay and the learning rate as a pure function of the step.

The schedule is stepped every iteration and is a function of the global step only, so
a resumed job needs nothing but the step from its checkpoint to continue the schedule.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from resnet50_trainer.config import TrainConfig

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Normalisation weights and biases get their own weight decay when one is given."""
    norm_wd = cfg.weight_decay if cfg.norm_weight_decay is None else cfg.norm_weight_decay
    bias_wd = cfg.weight_decay if cfg.bias_weight_decay is None else cfg.bias_weight_decay
    groups: dict[float, list[nn.Parameter]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, _NORM_LAYERS):
                wd = norm_wd
            elif name == "bias":
                wd = bias_wd
            else:
                wd = cfg.weight_decay
            groups.setdefault(wd, []).append(param)
    return [{"params": params, "weight_decay": wd} for wd, params in groups.items()]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.SGD:
    return torch.optim.SGD(
        parameter_groups(model, cfg),
        lr=0.0,  # set before every step by lr_at
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        # One fused kernel per step on the GPU; the foreach path elsewhere.
        fused=device.type == "cuda",
    )


def lr_at(step: int, cfg: TrainConfig, peak_lr: float, steps_per_epoch: int) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    warmup = cfg.lr_warmup_epochs * steps_per_epoch
    if step < warmup:
        fraction = step / warmup
        return peak_lr * (cfg.lr_warmup_decay + (1 - cfg.lr_warmup_decay) * fraction)
    if cfg.lr_scheduler == "step":
        epoch = step // steps_per_epoch
        return peak_lr * cfg.lr_gamma ** bisect.bisect_right(cfg.lr_steps, epoch)
    total = cfg.epochs * steps_per_epoch
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    return cfg.lr_min + (peak_lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
