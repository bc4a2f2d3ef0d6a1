"""A whole run: set up, resume, train and evaluate epoch by epoch, checkpoint, report."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from resnet50_trainer import checkpoint, distributed
from resnet50_trainer.config import TrainConfig, validate_world
from resnet50_trainer.data.loaders import build_loaders
from resnet50_trainer.data.transforms import build_batch_mixer
from resnet50_trainer.distributed import Placement
from resnet50_trainer.engine import (
    EpochResult,
    EvalResult,
    StepContext,
    evaluate,
    precise_bn,
    train_one_epoch,
)
from resnet50_trainer.errors import ConfigError, RankConfigError
from resnet50_trainer.model import build_ema, build_model
from resnet50_trainer.optim import build_optimizer
from resnet50_trainer.report import Reporter
from resnet50_trainer.stopping import Stopped, StopSignal


def seed_everything(seed: int) -> None:
    """The streams that initialise the model; training's draws are seeded per step and
    per sample (seeds.py), so that a resumed run draws what an unstopped one does."""
    torch.manual_seed(seed)
    random.seed(seed)


def configure_device(device: torch.device, deterministic: bool = False) -> None:
    """Settings that make a GPU fast and leave the results within training noise.

    cuDNN benchmarks the convolution algorithms for the (fixed) input shapes once; fp32
    convolutions and matrix products use TF32 tensor cores on Ampere and newer GPUs,
    as NVIDIA's fp32 figures do. Nothing changes on the CPU.
    --use-deterministic-algorithms trades the benchmark for bitwise repeatable kernels.
    """
    if deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type != "cuda":
        return
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True


def build_training_model(cfg: TrainConfig, where: Placement, num_classes: int) -> nn.Module:
    """The bare model on the device, in the configured memory format."""
    model = build_model(cfg, num_classes)
    if cfg.sync_bn and where.world_size > 1:
        if where.device.type != "cuda":
            raise ConfigError("--sync-bn needs GPUs: SyncBatchNorm does not run on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return model.to(where.device, memory_format=memory_format)


def build_scaler(cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler for fp16 autocast, a disabled one otherwise."""
    return torch.amp.GradScaler(device.type, enabled=cfg.precision == "amp")


def build_step_context(
    cfg: TrainConfig,
    where: Placement,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    steps_per_epoch: int,
    num_classes: int,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> StepContext:
    """What engine.train_step runs: the bare model wrapped in DDP (several processes)
    and torch.compile (--compile), the loss, the LR schedule and batch mixing."""
    wrapped = model
    if where.world_size > 1:
        device_ids = [where.local_rank] if where.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids,
                                          gradient_as_bucket_view=True)
    return StepContext(
        cfg=cfg,
        where=where,
        model=torch.compile(wrapped, mode=cfg.compile_mode) if cfg.compile else wrapped,
        optimizer=optimizer,
        scaler=scaler,
        criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        peak_lr=cfg.peak_lr(where.world_size),
        warmup_epochs=cfg.warmup_epochs(where.world_size),
        steps_per_epoch=steps_per_epoch,
        mixer=build_batch_mixer(cfg, num_classes),
        ema=ema,
    )


@dataclasses.dataclass
class Totals:
    """Counters that continue across restarts (kept in every checkpoint)."""

    epoch: int = 0  # epochs completed (trained and evaluated)
    step: int = 0  # optimizer steps completed
    # A mid-epoch checkpoint's: steps of the next epoch done, and their losses summed (for
    # the epoch's mean loss); 0 at an epoch's end.
    epoch_steps: int = 0
    epoch_loss_sum: float = 0.0
    best_acc1: float | None = None
    best_epoch: int | None = None  # the epoch best.pt holds; absent from older checkpoints
    train_images: int = 0
    train_seconds: float = 0.0
    elapsed_seconds: float = 0.0  # wall time of all attempts, evaluation included

    @property
    def images_per_second(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0

    def count_steps(self, trained: EpochResult) -> None:
        self.step += trained.steps
        self.epoch_steps += trained.steps
        self.epoch_loss_sum += trained.loss_sum
        self.train_images += trained.images
        self.train_seconds += trained.seconds

    def count_epoch(self, trained: EpochResult) -> EpochResult:
        """The epoch is over (its steps counted): what it trained, the steps before a
        resumption included in the loss."""
        whole = dataclasses.replace(trained, steps=self.epoch_steps,
                                    loss_sum=self.epoch_loss_sum)
        self.epoch += 1
        self.epoch_steps, self.epoch_loss_sum = 0, 0.0
        return whole

    def count_evaluation(self, result: EvalResult | None) -> bool:
        """Whether `result` is the best Acc@1 so far (strictly better than every earlier)."""
        if result is None or (self.best_acc1 is not None and not result.acc1 > self.best_acc1):
            return False
        self.best_acc1, self.best_epoch = result.acc1, self.epoch
        return True


def compat_fields(cfg: TrainConfig, world_size: int, num_classes: int) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued."""
    return {
        "model": cfg.model,
        "num_classes": num_classes,
        "global_batch_size": cfg.per_process_batch(world_size) * world_size,
        "lr_scheduler": cfg.lr_scheduler,
        "opt": cfg.opt,
        "model_ema": cfg.model_ema,
    }


def run(cfg: TrainConfig) -> None:
    """The whole run; raises Stopped when it stopped on SIGTERM after saving its state."""
    stop = StopSignal()  # installed once training starts (Run.train)
    try:
        where = distributed.placement_from_env(cfg)
        validate_world(cfg, where.world_size)
        distributed.init(cfg, where)
        reporter = Reporter(cfg, where)
        try:
            Run(cfg, where, reporter, stop).execute()
        finally:
            reporter.close()
            distributed.shutdown()
    finally:
        stop.uninstall()


class Run:
    """One start of a job on this process: what it trains, and the loop. What it says
    goes through `report` (report.Reporter)."""

    def __init__(self, cfg: TrainConfig, where: Placement, reporter: Reporter,
                 stop: StopSignal | None = None) -> None:
        self.cfg, self.where, self.report = cfg, where, reporter
        self.stop = stop or StopSignal()
        self.started, self.elapsed_before = time.perf_counter(), 0.0
        self.last_saved = time.monotonic()  # for --checkpoint-interval-minutes
        self.output_dir = Path(cfg.output_dir)
        if where.is_main:
            checkpoint.check_writable(self.output_dir)
            checkpoint.remove_stale_temporaries(self.output_dir)
        configure_device(where.device, cfg.use_deterministic_algorithms)
        seed_everything(cfg.seed)
        self.loaders = build_loaders(cfg, where)
        self.model = build_training_model(cfg, where, self.loaders.num_classes)
        self.optimizer = build_optimizer(self.model, cfg, where.device)
        self.scaler = build_scaler(cfg, where.device)
        self.ema = build_ema(cfg, self.model, self.loaders.train_steps, where.world_size,
                             where.device)
        self.compat = compat_fields(cfg, where.world_size, self.loaders.num_classes)
        self.totals = Totals()

    # ------------------------------------------------------------ checkpoints

    def _find_checkpoint(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The checkpoint to continue from, and its contents if this rank has read them.

        The newest valid checkpoint of --output-dir wins over --resume, which only starts
        a job whose output dir is still empty: a restarted job continues its own progress.
        """
        # Rank 0 picks, so every rank continues from the same file, or stops with its error.
        newest, error = None, None
        if self.where.is_main:
            try:
                newest = checkpoint.newest_valid(self.output_dir, checkpoint.RESUME_KEYS)
            except ConfigError as exc:  # files there, none loads: never start afresh over them
                error = exc
        found, error = distributed.broadcast_from_main(
            (str(newest[0]) if newest else None, error))
        if error is not None:
            raise error
        if found:
            return Path(found), (newest[1] if newest else None)
        return (Path(self.cfg.resume) if self.cfg.resume else None), None

    def _load(self, path: Path) -> dict[str, Any]:
        """Read a checkpoint that rank 0 has not read for this rank (--resume, other ranks)."""
        rank = self.where.rank
        from_resume = self.cfg.resume is not None and path == Path(self.cfg.resume)
        if not path.is_file():
            raise RankConfigError(
                f"checkpoint {path} is not readable on rank {rank}"
                + ("" if self.cfg.resume else ": --output-dir must be shared by all nodes")
            )
        try:
            return checkpoint.load(path, checkpoint.RESUME_KEYS)
        except checkpoint.Unreadable as exc:  # the file stays as it is: the user decides
            if from_resume:
                raise RankConfigError(f"--resume {path} does not load: {exc.reason}; give "
                                      "another checkpoint, or none to start afresh") from None
            raise RankConfigError(f"checkpoint {path} does not load on rank {rank} "
                                  f"({exc.reason}) but did on rank 0: --output-dir must be "
                                  "shared by all nodes") from None

    def restore(self) -> Path | None:
        """Continue from a checkpoint, if there is one. An unreadable file is a ConfigError
        unless an earlier one loads (checkpoint.newest_valid); a checkpoint of another
        configuration is a ConfigError naming the options; anything else is a bug."""
        path, state = self._find_checkpoint()
        if path is None:
            return None
        if state is None:
            state = self._load(path)
        # Evaluation only needs the same network; continuing training needs all of compat.
        expected = self.compat
        if self.cfg.test_only:
            keys = ("model", "num_classes", *(("model_ema",) if self.ema is not None else ()))
            expected = {k: self.compat[k] for k in keys}
        checkpoint.check_compatible(state, expected, path)
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if not self.cfg.test_only:  # the optimizer and the scaler only matter to training
            checkpoint.check_param_groups(state, self.optimizer, dataclasses.asdict(self.cfg),
                                          path)
            self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"]:  # empty when saved without amp
                self.scaler.load_state_dict(state["scaler"])
        self.totals = Totals(**state["totals"])
        if self.where.is_main and not self.cfg.test_only:
            checkpoint.recover_best(self.output_dir, state)
        return path

    def _state(self, totals: Totals) -> dict[str, Any]:
        return {
            "format": checkpoint.FORMAT_VERSION,
            "epoch": totals.epoch,
            "step": totals.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "compat": self.compat,
            "totals": dataclasses.asdict(totals),
            "config": dataclasses.asdict(self.cfg),
        }

    def save(self, is_best: bool) -> None:
        self.last_saved = time.monotonic()
        if not self.where.is_main:
            return
        state = self._state(self.totals)
        # best.pt first: a checkpoint that records a best Acc@1 must never exist without the
        # best.pt of that Acc@1, which a kill between the two writes would otherwise lose.
        if is_best:
            checkpoint.save_atomic(state, self.output_dir / checkpoint.BEST_NAME)
        path = checkpoint.epoch_path(self.output_dir, self.totals.epoch)
        checkpoint.save_atomic(state, path)
        (self.output_dir / checkpoint.MID_EPOCH_NAME).unlink(missing_ok=True)  # now older
        checkpoint.prune(self.output_dir, self.cfg.keep_checkpoints)
        self.report.checkpoint_written(path, self.totals.epoch)

    # ------------------------------------------------------------ interruptions
    # (engine.Interruptions: what the training loop asks at each report)

    def stop_requested(self) -> bool:
        return self.stop.received is not None

    def checkpoint_due(self) -> bool:
        minutes = self.cfg.checkpoint_interval_minutes
        return (self.where.is_main and minutes is not None
                and time.monotonic() - self.last_saved >= 60 * minutes)

    def checkpoint(self, part: EpochResult, epoch_steps: int) -> None:
        """The mid-epoch checkpoint after `epoch_steps` steps of the current epoch."""
        self.last_saved = time.monotonic()
        if not self.where.is_main:
            return
        totals = dataclasses.replace(self.totals)
        totals.count_steps(part)
        totals.elapsed_seconds = self.elapsed()
        path = self.output_dir / checkpoint.MID_EPOCH_NAME
        checkpoint.save_atomic(self._state(totals), path)
        self.report.checkpoint_written(path, totals.epoch, epoch_steps)

    def stopped(self) -> Stopped:
        """Every rank stops here once rank 0 has saved (a rank exiting first would make
        torchrun kill the others, rank 0 in the middle of writing)."""
        distributed.barrier()
        t, why = self.totals, self.stop.received or "another rank's signal"
        where = (f"at step {t.epoch_steps} of epoch {t.epoch + 1}; it resumes there from "
                 f"{self.output_dir / checkpoint.MID_EPOCH_NAME}" if t.epoch_steps else
                 f"after epoch {t.epoch}; it resumes from that epoch's checkpoint")
        return Stopped(f"stopped by {why} {where}")

    def elapsed(self) -> float:
        """Wall time of all starts so far, evaluation included."""
        return self.elapsed_before + time.perf_counter() - self.started

    # ------------------------------------------------------------ phases

    def execute(self) -> None:
        self.started = time.perf_counter()
        resumed_from = self.restore()
        self.elapsed_before = self.totals.elapsed_seconds
        if resumed_from is None and self.cfg.test_only:
            raise ConfigError(
                f"--test-only needs a checkpoint: none in {self.output_dir} and no --resume"
            )
        self.report.started(self.output_dir, resumed_from, self.totals)
        if self.cfg.test_only:
            self.report.tested(self.evaluate())
        else:
            self.train()

    def train(self) -> None:
        cfg, where, t = self.cfg, self.where, self.totals
        ctx = build_step_context(cfg, where, self.model, self.optimizer, self.scaler,
                                 self.loaders.train_steps, self.loaders.num_classes, self.ema)
        if t.epoch_steps > ctx.steps_per_epoch:
            raise ConfigError(
                f"the checkpoint was saved after {t.epoch_steps} steps of epoch {t.epoch + 1}, "
                f"but an epoch now has {ctx.steps_per_epoch}: the training set changed; "
                "use another --output-dir to start afresh")
        self.report.training(ctx.steps_per_epoch, ctx.peak_lr, ctx.warmup_epochs, t)
        # From here a SIGTERM stops the run at the next report, with a checkpoint; before,
        # there is nothing to save and the default (exit at once) is the right answer.
        self.stop.install()
        final: EvalResult | None = None
        for epoch in range(t.epoch, cfg.epochs):
            done = t.epoch_steps  # after a mid-epoch checkpoint: its steps are not redone
            self.loaders.set_epoch(epoch, done)
            trained = train_one_epoch(ctx, self.loaders.train, epoch, t.step - done,
                                      self.report, done, self)
            t.count_steps(trained)
            if trained.stopped:
                raise self.stopped()
            self.loaders.set_epoch(epoch)  # precise BN reads the epoch from its start
            trained = t.count_epoch(trained)
            result = None
            if t.epoch % cfg.eval_every == 0 or t.epoch == cfg.epochs:
                self.precise_bn()
                result = self.evaluate()
            is_best = t.count_evaluation(result)
            t.elapsed_seconds = self.elapsed()
            self.report.epoch_end(t, trained, result, lr=self.optimizer.param_groups[0]["lr"])
            self.save(is_best)
            final = result
            # A SIGTERM during the evaluation or the save: the epoch's checkpoint is enough.
            if epoch + 1 < cfg.epochs and self._all_agree_to_stop():
                raise self.stopped()
        if final is None:  # the job had finished before this start: report it again
            final = self.evaluate()
        self.report.finished(final, t)

    def _all_agree_to_stop(self) -> bool:
        asked = torch.tensor([float(self.stop_requested())], device=self.where.device)
        return distributed.all_reduce_sum(asked).item() > 0

    def precise_bn(self) -> None:
        """Before an evaluation in training: BatchNorm statistics of the current weights
        (engine.precise_bn) over --precise-bn-images, at most one epoch."""
        global_batch = self.cfg.per_process_batch(self.where.world_size) * self.where.world_size
        batches = min(self.loaders.train_steps, -(-self.cfg.precise_bn_images // global_batch))
        if self.cfg.data_backend == "synthetic":  # one batch repeated: more adds nothing
            batches = min(batches, 1)
        precise_bn(self.model, self.loaders.train, batches, self.where, self.cfg)

    def evaluate(self) -> EvalResult:
        result = evaluate(self.model, self.loaders.val, self.where, self.cfg)
        if result.images != self.loaders.val_size:  # the exactly-once contract
            raise RuntimeError(
                f"evaluated {result.images} images, the validation set has {self.loaders.val_size}"
            )
        self.report.evaluated(result)
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.loaders.val, self.where, self.cfg)
            self.report.evaluated(ema, ema=True)
        return result
