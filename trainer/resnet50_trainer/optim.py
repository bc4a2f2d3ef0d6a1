"""The optimizer with per-group weight decay, and the learning rate as a pure function of
the step.

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
# torchvision's vision transformers' embedding parameters (--transformer-embedding-decay).
_EMBEDDINGS = ("class_token", "position_embedding", "relative_position_bias_table")


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Normalisation weights, biases and embeddings get their own weight decay when given."""
    def given(value: float | None) -> float:
        return cfg.weight_decay if value is None else value

    groups: dict[float, list[nn.Parameter]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, _NORM_LAYERS):
                wd = given(cfg.norm_weight_decay)
            elif name in _EMBEDDINGS:
                wd = given(cfg.transformer_embedding_decay)
            elif name == "bias":
                wd = given(cfg.bias_weight_decay)
            else:
                wd = cfg.weight_decay
            groups.setdefault(wd, []).append(param)
    return [{"params": params, "weight_decay": wd} for wd, params in groups.items()]


def build_optimizer(model: nn.Module, cfg: TrainConfig,
                    device: torch.device) -> torch.optim.Optimizer:
    """--opt with torchvision's settings; the LR is set before every step by lr_at."""
    groups = parameter_groups(model, cfg)
    # One fused kernel per step on the GPU; the foreach path elsewhere.
    fused = device.type == "cuda"
    if cfg.opt == "rmsprop":  # torchvision's (TF-like) eps and alpha
        return torch.optim.RMSprop(groups, lr=0.0, momentum=cfg.momentum, eps=0.0316, alpha=0.9)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=0.0, fused=fused)
    return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           fused=fused)


def lr_at(step: int, cfg: TrainConfig, peak_lr: float, steps_per_epoch: int,
          warmup_epochs: float) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    warmup = warmup_epochs * steps_per_epoch
    if step < warmup:
        if cfg.lr_warmup_method == "constant":
            return peak_lr * cfg.lr_warmup_decay
        fraction = step / warmup
        return peak_lr * (cfg.lr_warmup_decay + (1 - cfg.lr_warmup_decay) * fraction)
    epoch = step // steps_per_epoch
    if cfg.lr_scheduler == "step":
        return peak_lr * cfg.lr_gamma ** bisect.bisect_right(cfg.step_milestones(), epoch)
    if cfg.lr_scheduler == "exponential":  # torchvision's ExponentialLR: per epoch
        return peak_lr * cfg.lr_gamma ** epoch
    total = cfg.epochs * steps_per_epoch
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    if cfg.lr_scheduler == "linear":
        return peak_lr + (cfg.lr_min - peak_lr) * progress
    return cfg.lr_min + (peak_lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def _step_decays(cfg: TrainConfig) -> str:
    if cfg.lr_steps is None and cfg.lr_step_size is not None:
        return f"every {cfg.lr_step_size} epochs"
    return f"at epochs {', '.join(map(str, cfg.step_milestones()))}"


def schedule_summary(cfg: TrainConfig) -> str:
    if cfg.lr_scheduler == "step":
        return f"x{cfg.lr_gamma:g} {_step_decays(cfg)}"
    if cfg.lr_scheduler == "exponential":
        return f"x{cfg.lr_gamma:g} every epoch"
    return f"{cfg.lr_scheduler} to {cfg.lr_min:g}"


def schedule_warning(cfg: TrainConfig) -> str | None:
    """What is wrong with a schedule that never lowers the LR inside the run."""
    if cfg.lr_scheduler == "step" and all(m >= cfg.epochs for m in cfg.step_milestones()):
        return (f"the learning rate never decays: the step schedule decays "
                f"{_step_decays(cfg)}, not inside the {cfg.epochs}-epoch run; give "
                "--lr-steps or --lr-step-size within it, or --lr-scheduler cosine")
    if cfg.lr_scheduler == "exponential" and (cfg.lr_gamma >= 1 or cfg.epochs == 1):
        return f"the learning rate never decays: --lr-gamma {cfg.lr_gamma:g} per epoch " \
            f"over {cfg.epochs} epochs"
    return None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
