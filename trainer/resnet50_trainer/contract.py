"""The contract between the operator and the trainer, in one place: what each side may
rely on of the other. The standard library only: the operator's image has no torch, and
this is the one trainer module the operator imports.

- exit codes: what a trainer's exit says, and whether the operator retries it;
- the options the operator renders (render.trainer_args) and their accepted values;
- the progress the trainer reports: Prometheus gauges served on --metrics-port and left
  in --termination-log, parsed back by the operator, and the duration format both print.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# ------------------------------------------------------------------ exit codes

EXIT_CRASH = 1  # an unexpected error (a bug): Python's traceback and its exit code
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_ACCESS = 4
SIGNAL_EXIT_BASE = 128  # killed by signal N (OOM kill, SIGTERM): exit 128+N
# SIGTERM (a drain, an eviction, a preemption): every rank stops at the same step, rank 0
# saves a checkpoint of that step, and all exit with the code a SIGTERM kill would give.
EXIT_STOPPED = SIGNAL_EXIT_BASE + 15


@dataclass(frozen=True)
class ExitClass:
    code: int
    reason: str  # the reason the operator reports (status.lastFailure, the Failed condition)
    meaning: str


# The trainer's own codes. Like a crash (EXIT_CRASH, reported with the container's reason)
# they are final: the same input would meet the same error, so the operator does not retry
# them. A signal (SIGNAL_EXIT_BASE + N) is retried; so is a failure with no exit code.
EXIT_CLASSES = {c.code: c for c in (
    ExitClass(EXIT_CONFIG, "ConfigurationError", "bad options, a missing or inconsistent "
              "dataset, or a checkpoint of another configuration"),
    ExitClass(EXIT_DATA, "DataError", "a sample that cannot be read while training"),
    ExitClass(EXIT_ACCESS, "AccessDenied", "a dataset or checkpoint path the trainer's uid "
              "may not read or write"),
)}


def retried(exit_code: int | None) -> bool:
    """Whether a restart may help: a signal, or no exit code at all (a lost pod)."""
    return exit_code is None or exit_code >= SIGNAL_EXIT_BASE


# ------------------------------------------------------------------ options


class Flag:
    """resnet50-train options the operator renders from a spec (render.trainer_args)."""

    METRICS_PORT = "--metrics-port"
    TERMINATION_LOG = "--termination-log"
    PRESET = "--preset"
    SYNTHETIC = "--synthetic"
    DATA_PATH = "--data-path"
    OUTPUT_DIR = "--output-dir"
    DEVICE = "--device"
    PRECISION = "--precision"
    EPOCHS = "--epochs"
    BATCH_SIZE = "--batch-size"
    LR = "--lr"
    WORKERS = "--workers"
    PRINT_FREQ = "--print-freq"
    CHANNELS_LAST = "--channels-last"
    NO_CHANNELS_LAST = "--no-channels-last"
    CHECKPOINT_INTERVAL = "--checkpoint-interval-minutes"


OPERATOR_FLAGS = tuple(v for k, v in vars(Flag).items() if k.isupper())
PRECISIONS = ("fp32", "amp", "bf16")
# The names of config.PRESETS (which holds what they set; a test keeps the two equal).
PRESET_NAMES = (
    "amp-16cards", "amp-1card", "amp-4cards", "amp-8cards", "cpu-smoke", "ffcv-16epochs",
    "fp32-16cards", "fp32-1card", "fp32-4cards", "fp32-8cards", "paddleclas-fp32-4cards",
    "torchvision-v1", "torchvision-v2",
)

# ------------------------------------------------------------------ progress

METRIC_PREFIX = "resnet50_"
# name (without METRIC_PREFIX) -> help text; every value is a gauge
GAUGES = {
    "epoch": "Epoch being trained, 1-based (the last one once finished)",
    "epochs": "Epochs of the run",
    "step": "Steps done in the current epoch",
    "steps_per_epoch": "Steps of one epoch",
    "global_step": "Steps done since the start of the run, over all epochs",
    "loss": "Training loss, mean of the last report window",
    "learning_rate": "Learning rate at the last report",
    "images_per_second": "Training images per second over all ranks, last report window",
    "top1_accuracy": "Acc@1 of the last evaluation, percent",
    "top5_accuracy": "Acc@5 of the last evaluation, percent",
    "eta_seconds": "Estimated seconds to the end of training",
    "checkpoint_epoch": "Epoch of the last checkpoint written",
    "checkpoint_timestamp_seconds": "Unix time of the last checkpoint written",
    "finished": "1 once the run has finished training",
}
_SAMPLE = re.compile(rf"^{METRIC_PREFIX}(\w+)(?:\{{[^}}]*\}})?\s+(\S+)")


def render_gauges(values: dict[str, float], comments: bool = True) -> str:
    """Prometheus text exposition of the known gauges that have a value."""
    lines = []
    for name, text in GAUGES.items():
        if values.get(name) is None:
            continue
        if comments:
            lines += [f"# HELP {METRIC_PREFIX}{name} {text}",
                      f"# TYPE {METRIC_PREFIX}{name} gauge"]
        lines.append(f"{METRIC_PREFIX}{name} {float(values[name]):.17g}")
    return "\n".join(lines) + "\n"


def parse_gauges(text: str) -> dict[str, float]:
    """The known gauges in a Prometheus text (unknown and malformed lines are skipped)."""
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m and m.group(1) in GAUGES:
            try:
                value = float(m.group(2))
            except ValueError:
                continue
            if math.isfinite(value):
                out[m.group(1)] = value
    return out


def format_duration(seconds: float) -> str:
    """The reference results' style: 4d3h, 12h43m, 11h, 8m20s, 42s."""
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
