"""The network (torchvision, from scratch or from --weights) and its moving average."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
        model = torchvision.models.get_model(cfg.model, weights=None, num_classes=num_classes,
                                             **kwargs)
    except TypeError as exc:  # an option the chosen architecture does not have
        raise ConfigError(f"--model {cfg.model}: {exc}") from None
    if cfg.weights:
        load_weights(model, cfg.weights, cfg.model)
    return model


def weights_file(name: str, model: str) -> Path:
    """The file of a torchvision weights name (`ResNet50_Weights.IMAGENET1K_V2`, or
    `IMAGENET1K_V2` / `DEFAULT` of --model) in torch's hub cache, which is where
    torchvision's own download would have put it. Nothing is downloaded: training nodes
    often cannot reach the internet, and a run must not depend on it."""
    import torchvision

    try:
        weights = torchvision.models.get_weight(name) if "." in name else \
            torchvision.models.get_model_weights(model)[name]
    except (KeyError, ValueError, AttributeError):
        raise ConfigError(f"--weights {name}: neither a file nor a torchvision weights name of "
                          f"--model {model}") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.is_file():
        raise ConfigError(f"--weights {name}: {path} is missing and this trainer never "
                          f"downloads; copy {weights.url} there, or give a local file")
    return path


def load_weights(model: nn.Module, weights: str, model_name: str) -> None:
    """Initial weights from a state dict file (torchvision's, or a model saved by this
    trainer: a checkpoint's "model"), or from a torchvision weights name in the cache."""
    path = Path(weights) if Path(weights).is_file() else weights_file(weights, model_name)
    try:
        # torchvision's train.py also saves its argparse.Namespace: harmless, allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"--weights {weights}: {path} does not load: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a checkpoint of this trainer or of torchvision's train.py
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--weights {weights}: {path} holds no state dict (names -> tensors), "
                          "nor a checkpoint with one under 'model'")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if wrong or missing or unexpected:
        details = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here"
                   for k in wrong[:3]]
        details += [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        details += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        raise ConfigError(f"--weights {weights} do not fit --model {model_name} with this "
                          f"--num-classes: {'; '.join(details)}")
    model.load_state_dict(state)


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
