"""status.training from the trainer's gauges, and when a training without progress is hung."""

from __future__ import annotations

import datetime as dt

from resnet50_operator.reconcile.decision import find_condition
from resnet50_operator.reconcile.observe import parse_time, timestamp
from resnet50_operator.spec import (
    CheckpointRecord,
    ResNet50TrainingStatus,
    RunPolicySpec,
    TrainingProgress,
)
from resnet50_trainer.contract import format_duration


def progress_status(previous: TrainingProgress | None, values: dict[str, float],
                    now: dt.datetime) -> TrainingProgress | None:
    """status.training from the trainer's gauges (contract.GAUGES); `previous` if they say nothing
    new. lastProgressTime moves only when the step count does."""
    if not values:
        return previous
    prev = previous or TrainingProgress()

    def whole(name: str) -> int | None:
        return int(values[name]) if name in values else None

    def of(done: str, total: str) -> str | None:
        return f"{whole(done)}/{whole(total)}" if done in values and total in values else None

    checkpoint = prev.last_checkpoint
    if "checkpoint_epoch" in values and "checkpoint_timestamp_seconds" in values:
        written = dt.datetime.fromtimestamp(values["checkpoint_timestamp_seconds"],
                                            dt.timezone.utc)
        checkpoint = CheckpointRecord(epoch=whole("checkpoint_epoch"), time=timestamp(written))
    step = whole("global_step")
    moved = step is not None and step != prev.global_step
    new = TrainingProgress(
        epoch=of("epoch", "epochs") or prev.epoch,
        step=of("step", "steps_per_epoch") or prev.step,
        global_step=step if step is not None else prev.global_step,
        loss=_rounded(values.get("loss"), 4, prev.loss),
        lr=_rounded(values.get("learning_rate"), 6, prev.lr),
        images_per_second=whole("images_per_second") if "images_per_second" in values
        else prev.images_per_second,
        top1=_rounded(values.get("top1_accuracy"), 2, prev.top1),
        top5=_rounded(values.get("top5_accuracy"), 2, prev.top5),
        eta=format_duration(values["eta_seconds"]) if "eta_seconds" in values else prev.eta,
        last_checkpoint=checkpoint,
        last_progress_time=timestamp(now) if moved else prev.last_progress_time,
    )
    return new if new != prev else previous


def _rounded(value: float | None, digits: int, previous: float | None) -> float | None:
    return round(value, digits) if value is not None else previous


def hang_deadline(status: ResNet50TrainingStatus, policy: RunPolicySpec) -> dt.datetime | None:
    """When a running training counts as hung unless its step count moves before; None if
    it is not judged. progressDeadlineSeconds after the later of its last progress and the
    moment all pods ran; before any progress, firstProgressDeadlineSeconds after all pods ran."""
    running = find_condition(status.conditions, "Running")
    if status.phase != "Running" or running is None or running.status != "True":
        return None
    all_running = parse_time(running.last_transition_time)
    progress = status.training
    last = parse_time(progress.last_progress_time) if progress else None
    deadline = policy.progress_deadline_seconds if last else \
        policy.first_progress_deadline_seconds
    if not deadline or all_running is None:
        return None
    return max(all_running, last or all_running) + dt.timedelta(seconds=deadline)
