"""Short-run accuracy on small real images: our trainer beside a plain loop and torchvision.

    python benchmarks/short_run.py                               # ours, plain: 12 epochs x 3 seeds
    python benchmarks/short_run.py --torchvision-references DIR  # and torchvision's train.py
    python benchmarks/short_run.py --epochs 1 --seeds 0 --json runs/short-run.json

DIR is a copy of torchvision's references/classification (train.py, presets.py,
transforms.py, utils.py, sampler.py); without it that contender is skipped.

The data: scikit-learn's bundled handwritten digits (1,797 real 8x8 grayscale scans, 10
classes, no download), written once as RGB JPEG files upscaled to --image-size (32 px,
bilinear) in the ImageNet folder layout, root/{train,val}/<class>/*.JPEG, with a fixed
stratified split:
30 images of each class for validation (300), the other 1,497 for training.

Every contender trains torchvision's ResNet50 from scratch (10 classes) on the CPU for the
same epochs at the same global batch and peak LR, with RandomResizedCrop(size) + flip for
training and Resize(size) + CenterCrop(size) for validation, and reports top-1 on the 300:
  ours         `python -m resnet50_trainer` as a subprocess, 2 gloo processes (torchrun,
               --nproc-per-node 2) x global-batch/2 images, its own defaults otherwise
               (what a user gets); --ours-args appends options; Acc@1 from the last
               record of OUTPUT_DIR/metrics.jsonl;
  plain        a plain PyTorch loop in this file, one process: SGD momentum 0.9, wd 1e-4,
               cosine schedule over the run stepped per iteration, torch.manual_seed(seed);
  torchvision  references/classification/train.py as a subprocess, one process of the
               global batch (its utils.init_distributed_mode hard-codes nccl, so it cannot
               run 2 gloo ranks on a CPU), its defaults otherwise (StepLR, step 30 epochs);
               --torchvision-args appends options. It has no seed option: its runs are
               unseeded (only PYTHONHASHSEED is set); Acc@1 is its last "Test:  Acc@1" line.

Each run's log is kept in --work-dir (a new temporary folder by default); checkpoints are
deleted once its accuracy is read, as they add up to gigabytes. The table gives top-1 per
seed, the mean and the mean wall time of a run (start-up, data scan and evaluation
included), then every command line; --json writes every result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CONTENDERS = ("ours", "plain", "torchvision")
IMAGE_SIZE = 32  # default of --image-size
VAL_PER_CLASS = 30
SPLIT_SEED = 0
JPEG_QUALITY = 95
# The usual ImageNet statistics, written out so the plain loop owes nothing to our trainer.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A subprocess started from inside a torchrun job would take these for its own rank.
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
            "MASTER_PORT", "GROUP_RANK", "SLURM_PROCID")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
TV_ACC_LINE = re.compile(r"^Test:  Acc@1 ([0-9.]+) Acc@5 ([0-9.]+)\s*$", re.MULTILINE)
OURS_RESULT_LINE = re.compile(r"Acc@1=([0-9.]+),FPS=")


@dataclass
class Result:
    contender: str
    seed: int
    acc1: float | None
    acc5: float | None
    seconds: float
    command: str
    error: str | None = None
    log: str | None = None


# ---------------------------------------------------------------- the data set


def write_digits_dataset(root: Path, size: int = IMAGE_SIZE) -> dict[str, dict[str, int]]:
    """scikit-learn's digits as root/{train,val}/<class>/*.JPEG; returns images per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        cls = f"digit_{label}"
        for split, chosen in (("val", indices[:VAL_PER_CLASS]), ("train", indices[VAL_PER_CLASS:])):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in sorted(chosen):
                # Scans are 0..16 ink levels: stretched to 0..255, upscaled, saved as RGB.
                pixels = np.round(digits.images[i] * (255 / 16)).astype(np.uint8)
                img = Image.fromarray(pixels)  # 2-D uint8: grayscale ("L")
                img = img.resize((size, size), Image.Resampling.BILINEAR)
                img.convert("RGB").save(folder / f"{cls}_{i:04d}.JPEG", "JPEG",
                                        quality=JPEG_QUALITY)
            counts[split][cls] = len(chosen)
    return counts


# ---------------------------------------------------------------- reading results


def parse_torchvision_acc(stdout: str) -> tuple[float, float] | None:
    """The last `Test:  Acc@1 X Acc@5 Y` line of train.py (not its EMA line)."""
    found = TV_ACC_LINE.findall(stdout)
    return (float(found[-1][0]), float(found[-1][1])) if found else None


def read_ours_acc(output_dir: Path, stdout: str = "") -> tuple[float, float | None] | None:
    """The last metrics.jsonl record with an eval acc1 (the "result" record), else the
    final `Acc@1=...,FPS=...` line of the log, which has no Acc@5."""
    path = output_dir / "metrics.jsonl"
    if path.exists():
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        with_acc = [r for r in records if r.get("acc1") is not None]
        if with_acc:
            return float(with_acc[-1]["acc1"]), with_acc[-1].get("acc5")
    found = OURS_RESULT_LINE.findall(stdout)
    return (float(found[-1]), None) if found else None


def format_table(results: Sequence[Result], seeds: Sequence[int]) -> str:
    """Markdown: a row per contender, top-1 per seed, the mean, the mean seconds per run."""
    head = ["contender", *(f"seed {s}" for s in seeds), "mean", "s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for contender in dict.fromkeys(r.contender for r in results):
        runs = {r.seed: r for r in results if r.contender == contender}
        cells = []
        for s in seeds:
            r = runs.get(s)
            cells.append("" if r is None else "failed" if r.acc1 is None else f"{r.acc1:.2f}")
        accs = [r.acc1 for r in runs.values() if r.acc1 is not None]
        mean = f"{statistics.mean(accs):.2f}" if accs else ""
        if len(accs) > 1:
            mean += f" ± {statistics.stdev(accs):.2f}"
        secs = f"{statistics.mean(r.seconds for r in runs.values()):.0f}"
        lines.append("| " + " | ".join([contender, *cells, mean, secs]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the contenders


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(extra)
    return env


def run_subprocess(contender: str, seed: int, cmd: list[str], run_dir: Path,
                   parse, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run cmd with its output in run_dir/log.txt; parse(log text) gives (acc1, acc5)."""
    # A fresh folder: our trainer resumes from, and appends to, what an earlier run left.
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log = run_dir / "log.txt"
    start = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                            env=env or clean_env()).returncode
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    acc = parse(text)
    for f in run_dir.rglob("*"):
        if f.suffix in CHECKPOINT_SUFFIXES and f.is_file():
            f.unlink()
    error = None
    if rc != 0 or acc is None:
        tail = " | ".join(text.strip().splitlines()[-3:])
        error = f"exit {rc}" + ("" if acc else ", no accuracy in the output") + f": {tail}"
    return Result(contender, seed, acc[0] if acc else None, acc[1] if acc else None,
                  seconds, shlex.join(cmd), error, str(log))


def run_ours(args: argparse.Namespace, data: Path, seed: int, run_dir: Path) -> Result:
    cmd = [sys.executable, "-m", "resnet50_trainer", "--data-path", str(data),
           "--device", "cpu", "--nproc-per-node", "2",
           "--batch-size", str(args.global_batch // 2), "--epochs", str(args.epochs),
           "--lr", str(args.lr), "--seed", str(seed), "--workers", str(args.workers),
           "--output-dir", str(run_dir / "out"),
           # The image sizes are the data set's, the same for every contender.
           "--train-crop-size", str(args.image_size), "--val-resize-size", str(args.image_size),
           "--val-crop-size", str(args.image_size), *shlex.split(args.ours_args)]
    return run_subprocess("ours", seed, cmd, run_dir,
                          lambda text: read_ours_acc(run_dir / "out", text))


def run_torchvision(args: argparse.Namespace, data: Path, seed: int, run_dir: Path) -> Result:
    refs = Path(args.torchvision_references).resolve()
    cmd = [sys.executable, "train.py", "--data-path", str(data), "--model", "resnet50",
           "--device", "cpu", "-b", str(args.global_batch), "--epochs", str(args.epochs),
           "--lr", str(args.lr), "--workers", str(args.workers),
           "--output-dir", str(run_dir / "out"),
           "--train-crop-size", str(args.image_size), "--val-resize-size", str(args.image_size),
           "--val-crop-size", str(args.image_size), *shlex.split(args.torchvision_args)]
    # train.py has no seed: PYTHONHASHSEED is all that can be fixed from outside.
    result = run_subprocess("torchvision", seed, cmd, run_dir, parse_torchvision_acc,
                            cwd=refs, env=clean_env(PYTHONHASHSEED=str(seed)))
    result.command = f"cd {shlex.quote(str(refs))} && PYTHONHASHSEED={seed} {result.command}"
    return result


def plain_loop(data: Path, seed: int, epochs: int, batch: int, lr: float,
               workers: int, size: int = IMAGE_SIZE) -> tuple[float, float]:
    """Textbook ResNet50 training in one process; returns (top-1, top-5) in percent."""
    import torch
    import torchvision
    from torchvision import transforms as T

    torch.manual_seed(seed)
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_set = torchvision.datasets.ImageFolder(data / "train", T.Compose(
        [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
    val_set = torchvision.datasets.ImageFolder(data / "val", T.Compose(
        [T.Resize(size), T.CenterCrop(size), T.ToTensor(), norm]))
    train = torch.utils.data.DataLoader(train_set, batch, shuffle=True, num_workers=workers)
    val = torch.utils.data.DataLoader(val_set, batch, num_workers=workers)
    model = torchvision.models.resnet50(num_classes=len(train_set.classes))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(train))
    for _ in range(epochs):
        model.train()
        for images, targets in train:
            loss = criterion(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    top1 = top5 = 0
    with torch.inference_mode():
        for images, targets in val:
            best5 = model(images).topk(5, dim=1).indices
            top1 += (best5[:, 0] == targets).sum().item()
            top5 += (best5 == targets[:, None]).any(dim=1).sum().item()
    return 100 * top1 / len(val_set), 100 * top5 / len(val_set)


def run_plain(args: argparse.Namespace, data: Path, seed: int, run_dir: Path) -> Result:
    # The command that reruns this row alone.
    cmd = ["python", "benchmarks/short_run.py", "--contenders", "plain", "--seeds", str(seed),
           "--epochs", str(args.epochs), "--global-batch", str(args.global_batch),
           "--lr", str(args.lr), "--workers", str(args.workers),
           "--image-size", str(args.image_size)]
    start = time.monotonic()
    try:
        acc1, acc5 = plain_loop(data, seed, args.epochs, args.global_batch, args.lr,
                                args.workers, args.image_size)
        error = None
    except Exception as exc:  # one failed row must not lose the others
        acc1 = acc5 = None
        error = f"{type(exc).__name__}: {exc}"
    return Result("plain", seed, acc1, acc5, time.monotonic() - start, shlex.join(cmd), error)


RUNNERS = {"ours": run_ours, "plain": run_plain, "torchvision": run_torchvision}


# ---------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Top-1 after a short run on scikit-learn's digits: our trainer, a plain "
        "loop and torchvision's reference script, at equal epochs and global batch.")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                   help="side of the JPEGs written and of every crop (32); the digits are "
                   "8x8 scans, so 16 keeps all they hold at a quarter of the compute")
    p.add_argument("--global-batch", type=int, default=64,
                   help="images per step over all processes (ours: 2 processes of half)")
    p.add_argument("--lr", type=float, default=0.025, help="peak LR (0.1 x 64/256)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--ours-args", default="", help="extra options for our trainer")
    p.add_argument("--torchvision-references", metavar="DIR",
                   help="torchvision's references/classification; skipped when not given")
    p.add_argument("--torchvision-args", default="", help="extra options for train.py")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--work-dir", help="data set and run logs (default: a new temporary folder)")
    p.add_argument("--json", metavar="OUT", help="write every result here")
    return p


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = build_parser().parse_args(argv)
    if args.global_batch % 2:
        sys.exit("--global-batch must be even: ours runs 2 processes of half of it")
    contenders = list(dict.fromkeys(args.contenders))
    notes = []
    if "torchvision" in contenders:
        if not args.torchvision_references:
            contenders.remove("torchvision")
            notes.append("torchvision: skipped, --torchvision-references DIR was not given.")
        elif not (Path(args.torchvision_references) / "train.py").is_file():
            sys.exit(f"--torchvision-references {args.torchvision_references}: no train.py")
        else:
            notes.append("torchvision: one process of the global batch (its utils.py "
                         "hard-codes nccl, so 2 gloo ranks on the CPU are not possible); "
                         "unseeded (train.py has no seed option, only PYTHONHASHSEED is set).")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="short-run-")).resolve()
    data = work / f"digits-{args.image_size}px"
    if not (data / "train").is_dir():
        counts = write_digits_dataset(data, args.image_size)
        print(f"Wrote {sum(counts['train'].values())} train / {sum(counts['val'].values())} "
              f"val JPEGs to {data}", flush=True)

    results = []
    for contender in contenders:
        for seed in args.seeds:
            print(f"[{contender} seed {seed}] running", flush=True)
            r = RUNNERS[contender](args, data, seed, work / f"{contender}-seed{seed}")
            results.append(r)
            shown = "failed" if r.acc1 is None else f"Acc@1 {r.acc1:.2f}"
            print(f"[{contender} seed {seed}] {shown} in {r.seconds:.0f} s"
                  + (f"  ({r.error})" if r.error else ""), flush=True)

    print(f"\n{args.epochs} epochs, global batch {args.global_batch}, peak LR {args.lr}, "
          f"{args.image_size}-px images, top-1 % on {VAL_PER_CLASS * 10} val images\n")
    print(format_table(results, args.seeds))
    print("\nCommands:\n" + "\n".join(f"- {r.contender} seed {r.seed}: `{r.command}`"
                                      for r in results))
    if notes:
        print("\n" + "\n".join(f"- {n}" for n in notes))
    print(f"\nLogs: {work}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        Path(args.json).write_text(json.dumps(
            {"settings": settings, "notes": notes, "results": [asdict(r) for r in results]},
            indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
