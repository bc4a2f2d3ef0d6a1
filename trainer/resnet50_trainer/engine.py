"""One training epoch and an exact evaluation.

The step does the same work whatever the options: autocast and the GradScaler are
disabled objects in fp32 rather than branches, and losses stay on the device until a
report is due, so the loop never waits on the GPU between reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.distributed import Placement, all_reduce_sum
from resnet50_trainer.optim import lr_at, set_lr
from resnet50_trainer.seeds import seed_step

if TYPE_CHECKING:
    from resnet50_trainer.report import Reporter

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StepContext:
    """Everything one training step needs, built once per run."""

    cfg: TrainConfig
    where: Placement
    model: nn.Module  # the DDP-wrapped (and maybe compiled) model
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    peak_lr: float
    warmup_epochs: float
    steps_per_epoch: int
    mixer: Mixer | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.channels_last else torch.contiguous_format

    def autocast(self) -> torch.autocast:
        return autocast_for(self.cfg.precision, self.where.device)


def autocast_for(precision: str, device: torch.device) -> torch.autocast:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


@dataclass(frozen=True)
class EpochResult:
    """What one call of train_one_epoch trained: the rest of the epoch, or up to a stop."""

    steps: int
    loss_sum: float  # the steps' losses (each the mean over all ranks), summed
    images: int  # over all ranks
    seconds: float
    data_seconds: float  # rank 0's time waiting for batches
    stopped: bool = False  # stopped on request before the epoch's end

    @property
    def loss(self) -> float:
        return self.loss_sum / self.steps if self.steps else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class Interruptions(Protocol):
    """What the loop asks at each report: whether to stop, or to save, mid-epoch."""

    def stop_requested(self) -> bool:
        """This process was asked to stop (SIGTERM); the ranks agree on it at the report."""

    def checkpoint_due(self) -> bool:
        """A periodic mid-epoch checkpoint is due (rank 0 decides; it alone writes)."""

    def checkpoint(self, part: EpochResult, epoch_steps: int) -> None:
        """Save the state after `epoch_steps` steps of the epoch, `part` of them trained
        in this call (only rank 0 writes)."""


@dataclass(frozen=True)
class EvalResult:
    acc1: float
    acc5: float
    loss: float
    images: int  # over all ranks: the whole validation set, each image once


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(ctx: StepContext, images: torch.Tensor, targets: torch.Tensor,
               step: int) -> torch.Tensor:
    """One optimizer step at global step `step`; returns the loss, detached, on the device.

    Nothing here waits for the device: the inputs' copies are asynchronous (no-ops when
    the backend already delivered them on the device in the right memory format), the LR
    is a Python float, and with the fused optimizer the GradScaler checks for infinite
    gradients on the device.
    """
    device = ctx.where.device
    images = images.to(device, non_blocking=True, memory_format=ctx.memory_format)
    targets = targets.to(device, non_blocking=True)
    if ctx.mixer is not None:
        images, targets = ctx.mixer(images, targets)
    set_lr(ctx.optimizer, lr_at(step, ctx.cfg, ctx.peak_lr, ctx.steps_per_epoch,
                                ctx.warmup_epochs))
    with ctx.autocast():
        loss = ctx.criterion(ctx.model(images), targets)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()
    if ctx.cfg.clip_grad_norm is not None:
        ctx.scaler.unscale_(ctx.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.cfg.clip_grad_norm)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    return loss.detach()


def eta_seconds(steps_left: int, seconds_so_far: float, steps_so_far: int) -> float:
    """Time to the end of training at this epoch's pace so far (evaluations not counted)."""
    return steps_left * seconds_so_far / max(1, steps_so_far)


def train_one_epoch(ctx: StepContext, loader, epoch: int, first_step: int,
                    reporter: Reporter, done: int = 0,
                    interruptions: Interruptions | None = None) -> EpochResult:
    """Train over `loader`; `first_step` is the global step this epoch starts at, `done`
    the steps of it trained before (a mid-epoch checkpoint's), which `loader` skips.

    Every --print-freq steps (and at the end) the window's mean loss over all ranks, its
    throughput and the ETA go to `reporter.step`. The same all-reduce carries whether any
    rank was asked to stop: all then stop after the same step, with a checkpoint of it.
    Each step's random draws come from its global step (seeds.seed_step).
    """
    cfg, device, rank = ctx.cfg, ctx.where.device, ctx.where.rank
    batch_images = cfg.per_process_batch(ctx.where.world_size) * ctx.where.world_size
    total_steps = cfg.epochs * ctx.steps_per_epoch
    ctx.model.train()
    window_loss = torch.zeros((), device=device)
    loss_sum, steps, data_seconds, window_steps = 0.0, 0, 0.0, 0
    stopped = False
    start = window_start = time.perf_counter()
    end = start
    for i, (images, targets) in enumerate(loader, start=done):
        data_seconds += time.perf_counter() - end
        step = first_step + i
        seed_step(cfg.seed, step, rank, device)
        loss = train_step(ctx, images, targets, step)
        if ctx.ema is not None and (step + 1) % cfg.model_ema_steps == 0:
            ctx.ema.update_parameters(ctx.model)
            if epoch < ctx.warmup_epochs:  # as torchvision: no averaging during warm-up
                ctx.ema.n_averaged.fill_(0)
        window_loss += loss
        window_steps += 1
        if window_steps == cfg.print_freq or i + 1 == ctx.steps_per_epoch:
            # The only host sync of the loop: one all-reduce per report.
            asked = float(interruptions is not None and interruptions.stop_requested())
            loss_total, stops = all_reduce_sum(torch.stack([
                window_loss.float(), torch.tensor(asked, device=device)])).tolist()
            mean_loss = loss_total / (window_steps * ctx.where.world_size)
            loss_sum += mean_loss * window_steps
            steps += window_steps
            _sync(device)
            now = time.perf_counter()
            reporter.step(
                epoch=epoch + 1, step=i + 1, global_step=step + 1, loss=mean_loss,
                lr=ctx.optimizer.param_groups[0]["lr"],
                images_per_second=window_steps * batch_images / (now - window_start),
                data_seconds=data_seconds / steps,
                eta_seconds=eta_seconds(total_steps - (step + 1), now - start, steps),
            )
            window_loss.zero_()
            window_steps = 0
            window_start = now
            stopped = stops > 0
            if interruptions is not None and (stopped or (
                    i + 1 < ctx.steps_per_epoch and interruptions.checkpoint_due())):
                interruptions.checkpoint(
                    EpochResult(steps, loss_sum, steps * batch_images, now - start,
                                data_seconds, stopped), i + 1)
            if stopped:
                break
        end = time.perf_counter()
    return EpochResult(steps, loss_sum, steps * batch_images, time.perf_counter() - start,
                       data_seconds, stopped)


@torch.no_grad()
def precise_bn(model: nn.Module, loader, batches: int, where: Placement,
               cfg: TrainConfig) -> int:
    """Re-estimate every BatchNorm's running mean and variance as their plain average over
    `batches` training batches (precise BN: Wu & Johnson 2021, as in pycls and Detectron2),
    averaged over all ranks; returns the batches used.

    The running statistics that training leaves behind are a moving average of batches
    seen by ever-changing weights, far off early in training: evaluating with them gives
    losses in the thousands. `model` is the bare module (no DDP: no collective per batch).
    """
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or batches <= 0:
        return 0
    saved = [m.momentum for m in norms]
    mean_sums = [torch.zeros_like(m.running_mean) for m in norms]
    var_sums = [torch.zeros_like(m.running_var) for m in norms]
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.train()
    for m in norms:
        m.momentum = 1.0  # running stats = this batch's, summed below
    used = 0
    for images, _ in loader:
        images = images.to(where.device, non_blocking=True, memory_format=memory_format)
        with autocast_for(cfg.precision, where.device):
            model(images)
        for m, mean_sum, var_sum in zip(norms, mean_sums, var_sums, strict=True):
            mean_sum += m.running_mean
            var_sum += m.running_var
        used += 1
        if used == batches:  # before the loader prepares a batch more
            break
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    if used == 0:
        return 0
    sums = [*mean_sums, *var_sums]
    averages = all_reduce_sum(torch.cat(sums)) / (used * where.world_size)  # one collective
    for buffer, average in zip([*(m.running_mean for m in norms), *(m.running_var for m in norms)],
                               averages.split([t.numel() for t in sums]), strict=True):
        buffer.copy_(average)
    return used


@torch.inference_mode()
def evaluate(model: nn.Module, loader, where: Placement, cfg: TrainConfig) -> EvalResult:
    """Acc@1/Acc@5 over every validation image exactly once across all ranks.

    `model` must be the bare module, not the DDP wrapper: DDP's forward broadcasts
    buffers, a collective that would hang when ranks hold different numbers of batches.
    """
    model.eval()
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    # correct@1, correct@5, loss sum, images: summed on the device, reduced once.
    totals = torch.zeros(4, dtype=torch.float64, device=where.device)
    for images, targets in loader:
        images = images.to(where.device, non_blocking=True, memory_format=memory_format)
        targets = targets.to(where.device, non_blocking=True)
        with autocast_for(cfg.precision, where.device):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(targets[:, None])
        totals[0] += hits[:, 0].sum()
        totals[1] += hits.any(dim=1).sum()
        totals[2] += F.cross_entropy(logits, targets, reduction="sum")
        totals[3] += targets.numel()
    all_reduce_sum(totals)
    correct1, correct5, loss_sum, images = totals.tolist()
    n = max(1.0, images)
    return EvalResult(100 * correct1 / n, 100 * correct5 / n, loss_sum / n, int(images))
