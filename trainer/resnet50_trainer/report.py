"""Everything a run tells the world, in one place.

Every rank calls the same methods; rank 0's log lines are the ones shown (the others log
at WARNING). Rank 0 also appends to OUTPUT_DIR/metrics.jsonl (progress.MetricsLog, which
`resnet50-train plot` draws) and, when asked for, keeps the live gauges (live.Publisher)
that it serves on --metrics-port and leaves in --termination-log when training ends.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from resnet50_trainer import live
from resnet50_trainer.config import TrainConfig
from resnet50_trainer.distributed import Placement
from resnet50_trainer.errors import ConfigError
from resnet50_trainer.optim import schedule_summary, schedule_warning
from resnet50_trainer.progress import MetricsLog, format_duration, result_line

if TYPE_CHECKING:
    from resnet50_trainer.engine import EpochResult, EvalResult
    from resnet50_trainer.train import Totals

log = logging.getLogger(__name__)


def start_publisher(cfg: TrainConfig) -> live.Publisher | None:
    """Rank 0's live progress, when asked for (the operator's pods ask for it)."""
    if not cfg.metrics_port and not cfg.termination_log:
        return None
    try:
        return live.Publisher(cfg.metrics_port, cfg.termination_log)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {cfg.metrics_port}: {exc.strerror}") from None


class Reporter:
    """The log lines, the metrics file and the live gauges of one run."""

    def __init__(self, cfg: TrainConfig, where: Placement) -> None:
        self.cfg, self.where = cfg, where
        # Started first: a port in use fails the run before its data is scanned.
        self.publisher = start_publisher(cfg) if where.is_main else None
        self.metrics: MetricsLog | None = None  # opened by started()
        self.steps_per_epoch = 0  # known from training()

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()

    def _publish(self, **values: float) -> None:
        if self.publisher is not None:
            self.publisher.update(**values)

    def _record(self, kind: str, **fields: object) -> None:
        if self.metrics is not None:
            self.metrics.write(kind, **fields)

    # ------------------------------------------------------------ events, in run order

    def started(self, output_dir: Path, resumed_from: Path | None, totals: Totals) -> None:
        """The checkpoint is restored (or there is none): opens the metrics file."""
        if resumed_from is not None:
            log.info("Resumed from %s (epoch %d done, step %d%s)", resumed_from,
                     totals.epoch, totals.step,
                     f", {totals.epoch_steps} steps of epoch {totals.epoch + 1}"
                     if totals.epoch_steps else "")
        if self.where.is_main:
            self.metrics = MetricsLog(output_dir)
        self._record("start", resumed_from=str(resumed_from) if resumed_from else None,
                     epoch=totals.epoch, world_size=self.where.world_size)

    def training(self, steps_per_epoch: int, peak_lr: float, warmup_epochs: float,
                 totals: Totals) -> None:
        cfg, where = self.cfg, self.where
        self.steps_per_epoch = steps_per_epoch
        self._publish(epoch=min(totals.epoch + 1, cfg.epochs), epochs=cfg.epochs, step=0,
                      steps_per_epoch=steps_per_epoch, global_step=totals.step)
        log.info("Training %s for %d epochs: %d processes x %d images, %d steps per epoch, "
                 "%s", cfg.model, cfg.epochs, where.world_size,
                 cfg.per_process_batch(where.world_size), steps_per_epoch,
                 cfg.precision + (" channels_last" if cfg.channels_last else ""))
        log.info("Learning rate: peak %.4g, %s after %s", peak_lr, schedule_summary(cfg),
                 f"a {cfg.lr_warmup_method} warm-up of {warmup_epochs:g} epochs"
                 if warmup_epochs else "no warm-up")
        warning = schedule_warning(cfg)
        if warning and where.is_main:  # the others log warnings too: once is enough
            log.warning("Warning: %s", warning)

    def step(self, epoch: int, step: int, global_step: int, loss: float, lr: float,
             images_per_second: float, data_seconds: float, eta_seconds: float) -> None:
        """A report window of the training loop: `epoch` and `step` (in the epoch) are
        1-based, `global_step` counts the steps done, `data_seconds` is per step."""
        log.info(
            "Epoch [%d/%d] [%*d/%d]  loss %.4f  lr %.5f  img/s %.1f  data %.3fs  eta %s",
            epoch, self.cfg.epochs, len(str(self.steps_per_epoch)), step, self.steps_per_epoch,
            loss, lr, images_per_second, data_seconds,
            datetime.timedelta(seconds=round(eta_seconds)),
        )
        self._publish(epoch=epoch, epochs=self.cfg.epochs, step=step,
                      steps_per_epoch=self.steps_per_epoch, global_step=global_step, loss=loss,
                      learning_rate=lr, images_per_second=images_per_second,
                      eta_seconds=eta_seconds)

    def evaluated(self, result: EvalResult, ema: bool = False) -> None:
        if ema:
            log.info("Test (EMA): Acc@1 %.3f  Acc@5 %.3f", result.acc1, result.acc5)
        else:
            log.info("Test: Acc@1 %.3f  Acc@5 %.3f  loss %.4f  (%d images)",
                     result.acc1, result.acc5, result.loss, result.images)

    def tested(self, result: EvalResult) -> None:
        """The end of --test-only."""
        self._record("test", **dataclasses.asdict(result))

    def epoch_end(self, totals: Totals, trained: EpochResult, result: EvalResult | None,
                  lr: float) -> None:
        """An epoch trained (and maybe evaluated); `totals` already count it."""
        if result is not None:
            self._publish(top1_accuracy=result.acc1, top5_accuracy=result.acc5)
        log.info("Epoch %d/%d done: loss %.4f  %s  time %s  img/s %.1f (all ranks)",
                 totals.epoch, self.cfg.epochs, trained.loss,
                 f"Acc@1 {result.acc1:.3f}  Acc@5 {result.acc5:.3f}" if result else "no eval",
                 format_duration(trained.seconds), trained.images_per_second)
        self._record(
            "epoch", epoch=totals.epoch, epochs=self.cfg.epochs, step=totals.step,
            loss=trained.loss, lr=lr, images_per_second=trained.images_per_second,
            epoch_seconds=trained.seconds, data_seconds=trained.data_seconds,
            **({"acc1": result.acc1, "acc5": result.acc5, "val_loss": result.loss,
                "val_images": result.images} if result else {}),
        )

    def checkpoint_written(self, path: Path, epoch: int, epoch_steps: int = 0) -> None:
        """A checkpoint after `epoch` epochs, and `epoch_steps` steps of the next one."""
        if epoch_steps:
            log.info("Saved %s (step %d of epoch %d)", path, epoch_steps, epoch + 1)
        else:
            log.info("Saved %s", path)
        self._publish(checkpoint_epoch=epoch, checkpoint_timestamp_seconds=time.time())

    def finished(self, final: EvalResult, totals: Totals) -> None:
        """Training is over (or was over before this start): the result line, and the
        final gauges left in the termination log."""
        self._publish(top1_accuracy=final.acc1, top5_accuracy=final.acc5)
        line = result_line(final.acc1, totals.images_per_second, totals.elapsed_seconds,
                           self.cfg.per_process_batch(self.where.world_size))
        log.info("%s", line)
        self._record("result", acc1=final.acc1, acc5=final.acc5,
                     images_per_second=totals.images_per_second,
                     elapsed_seconds=totals.elapsed_seconds, line=line)
        if self.publisher is not None:
            self.publisher.finish()
