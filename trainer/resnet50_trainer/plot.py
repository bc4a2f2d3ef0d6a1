"""`resnet50-train plot OUTPUT_DIR [-o FILE.png]`: the metrics of a run in one picture.

Three panels over epochs, from the `epoch` records of OUTPUT_DIR/metrics.jsonl: the
training loss (and the validation loss), Acc@1 and Acc@5 of the evaluations, and the
training throughput. A run that is still going plots the epochs done so far; an epoch
trained twice (a restart before its checkpoint was complete) counts with its last record,
and each restart is a dotted line. matplotlib is imported here only, with its Agg
renderer (no display), so training never loads it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from resnet50_trainer.errors import ConfigError
from resnet50_trainer.progress import METRICS_NAME, read_metrics

DEFAULT_NAME = "progress.png"
SIZE_INCHES = (15.0, 4.5)
DPI = 100  # 1500 x 450 pixels


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, exit code 2) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="resnet50-train plot",
                description="Plot the loss, accuracy and throughput of a run from its "
                "metrics.jsonl (the run may still be going).")
    p.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR",
                   help="the --output-dir of the run")
    p.add_argument("-o", "--output", type=Path, metavar="FILE.png",
                   help=f"where to write the picture (default: OUTPUT_DIR/{DEFAULT_NAME})")
    return p


def main(argv: list[str]) -> None:
    """The `plot` command; errors are ConfigErrors, which cli.main prints in one line."""
    args = build_parser().parse_args(argv)
    output = args.output or args.output_dir / DEFAULT_NAME
    records = load_records(args.output_dir)
    epochs = epoch_records(records)
    if not epochs:
        raise ConfigError(f"no epoch in {args.output_dir / METRICS_NAME} yet")
    restarts = [done for done in restart_epochs(records) if done < epochs[-1]["epoch"]]
    plot(epochs, restarts, output, title=_title(args.output_dir, epochs, records))
    last = epochs[-1]
    print(f"Wrote {output}: epochs {epochs[0]['epoch']}-{last['epoch']} of "
          f"{last.get('epochs', '?')}")


def load_records(output_dir: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl. A line being written while it is read (a running job)
    does not parse: skip it rather than fail."""
    try:
        return read_metrics(output_dir)
    except json.JSONDecodeError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read {output_dir / METRICS_NAME}: {exc.strerror}") from None
    records = []
    with open(output_dir / METRICS_NAME, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def epoch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `epoch` record per epoch, the last written, in epoch order."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("kind") == "epoch" and isinstance(record.get("epoch"), int):
            by_epoch[record["epoch"]] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def restart_epochs(records: list[dict[str, Any]]) -> list[int]:
    """The epochs done when each later start (a restart or a resume) began."""
    starts = [r.get("epoch", 0) for r in records if r.get("kind") == "start"]
    return [e for e in starts[1:] if isinstance(e, int)]


def _title(output_dir: Path, epochs: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    name = output_dir.resolve().name or str(output_dir)
    last = epochs[-1]
    title = f"{name}: epoch {last['epoch']}/{last.get('epochs', '?')}"
    results = [r for r in records if r.get("kind") == "result" and r.get("line")]
    return f"{title}  {results[-1]['line']}" if results else title


def plot(epochs: list[dict[str, Any]], restarts: list[int], output: Path, title: str) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ConfigError("plot needs matplotlib: pip install 'matplotlib>=3.8'") from None

    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax, speed_ax = fig.subplots(1, 3, sharex=True)
    style = {"marker": "o", "markersize": 3}

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    loss_ax.plot(*series("loss"), label="train", **style)
    if series("val_loss")[0]:
        loss_ax.plot(*series("val_loss"), label="validation", **style)
    losses = series("loss")[1] + series("val_loss")[1]
    # Scales far apart (the validation loss of synthetic data): a log axis shows both.
    if losses and min(losses) > 0 and max(losses) > 100 * min(losses):
        loss_ax.set_yscale("log")
    loss_ax.set(title="Loss", ylabel="cross-entropy")

    if series("acc1")[0]:
        acc_ax.plot(*series("acc1"), label="Acc@1", **style)
        acc_ax.plot(*series("acc5"), label="Acc@5", **style)
        best = max(series("acc1")[1])
        acc_ax.axhline(best, color="grey", linewidth=0.8, linestyle="--",
                       label=f"best Acc@1 {best:.2f}")
    else:
        acc_ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center",
                    transform=acc_ax.transAxes, color="grey")
    acc_ax.set(title="Accuracy (validation)", ylabel="%")

    speed = series("images_per_second")
    speed_ax.plot(*speed, color="tab:green", label="all ranks", **style)
    speed_ax.set(title="Throughput (training loop)", ylabel="images/s")
    speed_ax.set_ylim(0, max(speed[1], default=0) * 1.2 or 1)  # from 0: a drop shows as one

    for ax in (loss_ax, acc_ax, speed_ax):
        for i, done in enumerate(restarts):
            ax.axvline(done + 0.5, color="tab:red", linewidth=0.8, linestyle=":",
                       label="restart" if i == 0 else None)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="lower right" if ax is speed_ax else "best")
    fig.suptitle(title)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output)
    except (OSError, ValueError) as exc:  # unwritable, or a suffix matplotlib cannot write
        raise ConfigError(f"cannot write {output}: {exc}") from None
