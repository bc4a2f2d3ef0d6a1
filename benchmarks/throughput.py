"""Training throughput on one device: the trainer's modes against a deliberately plain loop.

    python benchmarks/throughput.py                                   # every mode, synthetic
    python benchmarks/throughput.py --modes amp+cl bf16+cl+compile
    python benchmarks/throughput.py --data synthetic pytorch gpu --make-jpegs 10000

Rows (see benchmarks/RESULTS.md):
  baseline  torchvision's model, plain SGD, fp32, NCHW, a standard DataLoader (random CPU
            tensors for synthetic data; the JPEG folder with torchvision's transforms and
            PIL otherwise) and a blocking .to(device) every step, PyTorch's default settings;
  trainer   what the trainer runs: build_training_model, build_optimizer, build_scaler,
            build_step_context and engine.train_step, fed by the trainer's data backends;
  loader    a data backend alone, batches delivered on the device, no training.
A mode is a precision (fp32, amp = fp16 autocast + GradScaler, bf16) with "+cl"
(channels_last) and "+compile" (torch.compile).

Timing: warm-up steps are not counted, the device is synchronised before the clock is
read, img/s is the median of --windows windows of --steps steps. Peak memory is
torch.cuda.max_memory_allocated over the row (null on the CPU). A mode that fails
(bf16 or compile unsupported, out of memory) becomes a row with its error.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resnet50_trainer.config import COMPILE_MODES, PRECISIONS, TrainConfig
from resnet50_trainer.data import BACKENDS, IMAGENET_MEAN, IMAGENET_STD
from resnet50_trainer.distributed import Placement
from resnet50_trainer.engine import StepContext, train_step
from resnet50_trainer.optim import build_optimizer
from resnet50_trainer.train import (
    build_scaler,
    build_step_context,
    build_training_model,
    configure_device,
)

JPEG_BACKENDS = ("pytorch", "gpu")
DATA_CHOICES = ("synthetic", *JPEG_BACKENDS)
DEFAULT_JPEG_DIR = "runs/bench-jpegs"
# Frequent ImageNet training image sizes (width, height) and how often each is drawn.
IMAGENET_LIKE_SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 400), (500, 500))
SIZE_WEIGHTS = (10, 3, 3, 1, 2, 1)
JPEG_CLASSES = 10
JPEG_QUALITY = 90
# Power spectrum 1/f^1.1: natural-looking texture, ~110 KB per 500x375 image at quality 90.
SPECTRUM_SLOPE = 1.1


# ---------------------------------------------------------------- modes and settings


@dataclass(frozen=True)
class Mode:
    """A precision, "+cl" (channels_last), "+compile" or "+compile=MODE" (torch.compile,
    --compile-mode), and "+foreach": the multi-tensor SGD instead of the trainer's fused
    one on CUDA (what the fused kernel is worth)."""

    precision: str
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    foreach: bool = False

    @property
    def name(self) -> str:
        compiled = "compile" if self.compile_mode == "default" else f"compile={self.compile_mode}"
        return "+".join([self.precision] + ["cl"] * self.channels_last
                        + [compiled] * self.compile + ["foreach"] * self.foreach)

    @classmethod
    def parse(cls, name: str) -> Mode:
        precision, *flags = name.split("+")
        compiled = [f for f in flags if f == "compile" or f.startswith("compile=")]
        compile_mode = (compiled[0].partition("=")[2] or "default") if compiled else "default"
        if (precision not in PRECISIONS or compile_mode not in COMPILE_MODES
                or not set(flags) - set(compiled) <= {"cl", "foreach"} or len(compiled) > 1):
            raise ValueError(f"unknown mode {name!r}: a precision ({', '.join(PRECISIONS)}) "
                             "with optional +cl, +compile or +compile=MODE (MODE one of "
                             f"{', '.join(COMPILE_MODES)}) and +foreach, e.g. amp+cl+compile")
        return cls(precision, "cl" in flags, bool(compiled), compile_mode, "foreach" in flags)


# The default sweep: every precision with and without channels_last and torch.compile.
ALL_MODES = tuple(Mode(p, cl, c) for p in PRECISIONS for cl in (False, True)
                  for c in (False, True))


@dataclass(frozen=True)
class Settings:
    device: torch.device
    batch_size: int
    image_size: int = 224
    steps: int = 20
    warmup: int = 10
    windows: int = 5
    workers: int = 8
    model: str = "resnet50"
    num_classes: int = 1000
    lr: float = 0.1  # the trainer's default: 0.1 per 256 images
    seed: int = 0
    jpeg_dir: Path | None = None


# ---------------------------------------------------------------- rows and timing


@dataclass
class Row:
    loop: str  # baseline | trainer | loader
    data: str  # synthetic | jpeg
    backend: str  # the trainer's --data-backend; "dataloader" for the baseline
    mode: str | None  # None for loader rows
    images_per_second: float | None = None
    window_images_per_second: list[float] = dataclasses.field(default_factory=list)
    peak_memory_bytes: int | None = None
    ratio_to_baseline: float | None = None  # over the baseline row of the same data
    share_of_synthetic: float | None = None  # jpeg trainer rows: over synthetic, same mode
    error: str | None = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], int], s: Settings) -> list[float]:
    """img/s of each window; `step` runs one step and returns the images it used."""
    for _ in range(s.warmup):
        step()
    synchronize(s.device)
    rates = []
    for _ in range(s.windows):
        start, images = time.perf_counter(), 0
        for _ in range(s.steps):
            images += step()
        synchronize(s.device)
        rates.append(images / (time.perf_counter() - start))
    return rates


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _release(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure(make_step: Callable[[], Callable[[], int]], s: Settings) -> list[float]:
    return timed(make_step(), s)  # the step and its model go when this returns


def measure(row: Row, make_step: Callable[[], Callable[[], int]], s: Settings) -> Row:
    """Fill `row` with the timing of the step that make_step builds, or with its error."""
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    try:
        rates = _measure(make_step, s)
    except Exception as exc:  # a failing mode is a row, not a crash
        row.error = _one_line(exc)
    else:
        row.window_images_per_second = rates
        row.images_per_second = statistics.median(rates)
        if s.device.type == "cuda":
            row.peak_memory_bytes = torch.cuda.max_memory_allocated(s.device)
    _release(s.device)
    print(format_row(row), flush=True)
    return row


def endless(batches: Iterable, set_epoch: Callable[[int], None] | None = None) -> Iterator:
    """Epoch after epoch of `batches`."""
    for epoch in itertools.count():
        if set_epoch is not None:
            set_epoch(epoch)
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the loader yields no batches")


# ---------------------------------------------------------------- the plain loop


@dataclass
class PlainLoop:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    device: torch.device


def build_plain_loop(s: Settings) -> PlainLoop:
    """A first script's training loop, with PyTorch's default backend settings."""
    import torchvision

    if s.device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, too
    torch.manual_seed(s.seed)
    model = torchvision.models.get_model(s.model, weights=None, num_classes=s.num_classes)
    model = model.to(s.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, weight_decay=1e-4)
    return PlainLoop(model, optimizer, nn.CrossEntropyLoss(), s.device)


def plain_step(loop: PlainLoop, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    images, targets = images.to(loop.device), targets.to(loop.device)
    loss = loop.criterion(loop.model(images), targets)
    loop.optimizer.zero_grad()
    loss.backward()
    loop.optimizer.step()
    return loss.detach()


def plain_loader(s: Settings, data: str) -> torch.utils.data.DataLoader:
    """A standard DataLoader: random CPU tensors, or the JPEG folder as torchvision reads it."""
    from torch.utils.data import DataLoader, TensorDataset

    if data == "synthetic":
        count = 4 * s.batch_size
        generator = torch.Generator().manual_seed(s.seed)
        dataset = TensorDataset(
            torch.randn(count, 3, s.image_size, s.image_size, generator=generator),
            torch.randint(s.num_classes, (count,), generator=generator),
        )
        return DataLoader(dataset, s.batch_size, shuffle=True, drop_last=True)
    from torchvision import datasets
    from torchvision import transforms as T

    transform = T.Compose([T.RandomResizedCrop(s.image_size), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(str(_jpeg_dir(s) / "train"), transform)
    return DataLoader(dataset, s.batch_size, shuffle=True, num_workers=s.workers,
                      drop_last=True)


def baseline_step(s: Settings, data: str) -> Callable[[], int]:
    loop = build_plain_loop(s)
    loop.model.train()
    batches = endless(plain_loader(s, data))

    def step() -> int:
        images, targets = next(batches)
        plain_step(loop, images, targets)
        return len(targets)

    return step


# ---------------------------------------------------------------- the trainer


def _jpeg_dir(s: Settings) -> Path:
    if s.jpeg_dir is None:
        raise ValueError("JPEG data needs --jpeg-dir or --make-jpegs")
    return s.jpeg_dir


def trainer_config(s: Settings, mode: Mode, backend: str) -> TrainConfig:
    """The TrainConfig the trainer would run with for this mode and data backend."""
    return TrainConfig(
        data_path=None if backend == "synthetic" else str(_jpeg_dir(s)),
        data_backend=backend,
        synthetic_train_size=s.batch_size * 100,
        synthetic_val_size=s.batch_size,
        num_classes=s.num_classes,
        train_crop_size=s.image_size,
        val_resize_size=round(s.image_size * 256 / 224),
        val_crop_size=s.image_size,
        workers=s.workers,
        model=s.model,
        channels_last=mode.channels_last,
        compile=mode.compile,
        compile_mode=mode.compile_mode,
        precision=mode.precision,
        device=s.device.type,
        batch_size=s.batch_size,
        lr=s.lr,
        # The plain loop's math: its constant LR (the step schedule holds the peak for the
        # first third of the run) and torchvision's initialisation.
        lr_scheduler="step",
        zero_init_residual=False,
        seed=s.seed,
    )


def build_trainer_context(s: Settings, mode: Mode, steps_per_epoch: int,
                          backend: str = "synthetic") -> StepContext:
    """The model, optimizer, scaler and step context as train.Run builds them."""
    cfg = trainer_config(s, mode, backend)
    where = Placement(0, 0, 1, s.device)
    configure_device(s.device)
    torch.manual_seed(s.seed)
    model = build_training_model(cfg, where, s.num_classes)
    # build_optimizer fuses SGD on CUDA only: asked for a CPU, it gives the same parameter
    # groups with the multi-tensor (foreach) update.
    optimizer = build_optimizer(model, cfg, torch.device("cpu") if mode.foreach else s.device)
    ctx = build_step_context(cfg, where, model, optimizer, build_scaler(cfg, s.device),
                             steps_per_epoch, s.num_classes)
    ctx.model.train()
    return ctx


def _backend_batches(s: Settings, mode: Mode, backend: str) -> tuple[Iterator, int]:
    cfg = trainer_config(s, mode, backend)
    loaders = BACKENDS[backend](cfg, Placement(0, 0, 1, s.device))
    return endless(loaders.train, loaders.set_epoch), loaders.train_steps


def trainer_step(s: Settings, mode: Mode, backend: str) -> Callable[[], int]:
    batches, steps_per_epoch = _backend_batches(s, mode, backend)
    ctx = build_trainer_context(s, mode, steps_per_epoch, backend)
    counter = itertools.count()

    def step() -> int:
        images, targets = next(batches)
        train_step(ctx, images, targets, next(counter))
        return len(targets)

    return step


def loader_step(s: Settings, mode: Mode, backend: str) -> Callable[[], int]:
    """The backend alone: what it can feed, in the memory format of `mode`."""
    configure_device(s.device)
    batches, _ = _backend_batches(s, mode, backend)

    def step() -> int:
        _, targets = next(batches)
        return len(targets)

    return step


# ---------------------------------------------------------------- a JPEG data set


def natural_image(width: int, height: int, rng: np.random.Generator):
    """RGB noise with a 1/f spectrum like photographs: shared luminance, some chroma."""
    from PIL import Image

    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    amplitude = radius ** -SPECTRUM_SLOPE

    def field() -> np.ndarray:
        noise = rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape)
        values = np.fft.irfft2(amplitude * noise, s=(height, width))
        return (values - values.mean()) / values.std()

    luminance = field()
    pixels = np.stack([luminance + 0.4 * field() for _ in range(3)], axis=-1)
    pixels = pixels * 50 + rng.uniform(80, 170, size=3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_jpeg(path: Path, sizes: Sequence[tuple[int, int]], weights: Sequence[int],
               seed: int) -> None:
    rng = np.random.default_rng(seed)
    width, height = sizes[rng.choice(len(sizes), p=np.asarray(weights) / sum(weights))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    natural_image(width, height, rng).save(tmp, "JPEG", quality=JPEG_QUALITY)
    tmp.rename(path)


def make_jpeg_set(root: Path, count: int, sizes: Sequence[tuple[int, int]] = IMAGENET_LIKE_SIZES,
                  weights: Sequence[int] = SIZE_WEIGHTS, classes: int = JPEG_CLASSES,
                  workers: int = 1, seed: int = 0) -> list[Path]:
    """`count` training JPEGs in root/train/<wnid>/ and one validation JPEG per class in
    root/val/<wnid>/, ImageNet style (both folders, so the trainer can read the set).
    Files already there are kept; the same arguments always give the same images."""
    classes = max(1, min(classes, count))
    jobs = []
    for i in range(count + classes):
        wnid = f"n{1440764 + i % classes:08d}"
        if i < count:
            path = root / "train" / wnid / f"{wnid}_{i // classes}.JPEG"
        else:
            path = root / "val" / wnid / f"ILSVRC2012_val_{i - count + 1:08d}.JPEG"
        jobs.append((path, seed * 1_000_003 + i))
    todo = [(path, job_seed) for path, job_seed in jobs if not path.exists()]
    if todo:
        with ProcessPoolExecutor(max(1, workers)) as pool:
            list(pool.map(write_jpeg, [p for p, _ in todo], itertools.repeat(sizes),
                          itertools.repeat(weights), [j for _, j in todo], chunksize=16))
    return [path for path, _ in jobs]


def describe_jpegs(root: Path) -> dict:
    files = sorted((root / "train").glob("*/*.JPEG"))
    sizes = [f.stat().st_size for f in files]
    return {"dir": str(root), "train_images": len(files),
            "mean_kilobytes": round(statistics.mean(sizes) / 1000, 1) if sizes else None}


# ---------------------------------------------------------------- the run


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device),
                "memory_bytes": torch.cuda.get_device_properties(device).total_memory}
    return {"type": "cpu", "name": cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def versions() -> dict:
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def plan_rows(s: Settings, modes: Sequence[Mode], data: Sequence[str],
              data_modes: Sequence[Mode]) -> list[tuple[Row, Callable[[], Callable[[], int]]]]:
    """Every row of the run, in order, with the function that builds its step."""
    rows: list[tuple[Row, Callable[[], Callable[[], int]]]] = []
    if "synthetic" in data:
        rows.append((Row("baseline", "synthetic", "dataloader", "fp32"),
                     lambda: baseline_step(s, "synthetic")))
        for mode in modes:
            rows.append((Row("trainer", "synthetic", "synthetic", mode.name),
                         lambda mode=mode: trainer_step(s, mode, "synthetic")))
    backends = [b for b in JPEG_BACKENDS if b in data]
    if backends:
        rows.append((Row("baseline", "jpeg", "dataloader", "fp32"),
                     lambda: baseline_step(s, "jpeg")))
    for backend in backends:
        rows.append((Row("loader", "jpeg", backend, None),
                     lambda backend=backend: loader_step(s, data_modes[0], backend)))
        for mode in data_modes:
            rows.append((Row("trainer", "jpeg", backend, mode.name),
                         lambda mode=mode, backend=backend: trainer_step(s, mode, backend)))
    return rows


def add_ratios(rows: list[Row]) -> None:
    baselines = {r.data: r.images_per_second for r in rows if r.loop == "baseline"}
    synthetic = {r.mode: r.images_per_second for r in rows
                 if r.loop == "trainer" and r.data == "synthetic"}
    for r in rows:
        if r.images_per_second is None:
            continue
        if baselines.get(r.data):
            r.ratio_to_baseline = r.images_per_second / baselines[r.data]
        if r.loop == "trainer" and r.data == "jpeg" and synthetic.get(r.mode):
            r.share_of_synthetic = r.images_per_second / synthetic[r.mode]


COLUMNS = (("loop", 9), ("data", 10), ("backend", 11), ("mode", 18), ("img/s", 10),
           ("x baseline", 11), ("of synth", 9), ("peak GiB", 9))


def _cells(row: Row) -> list[str]:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    peak = None if row.peak_memory_bytes is None else row.peak_memory_bytes / 2**30
    return [row.loop, row.data, row.backend, row.mode or "-", num(row.images_per_second, ".1f"),
            num(row.ratio_to_baseline, ".2f"), num(row.share_of_synthetic, ".0%"),
            num(peak, ".2f")]


def format_row(row: Row) -> str:
    line = "".join(cell.ljust(width) for cell, (_, width) in zip(_cells(row), COLUMNS, strict=True))
    return line.rstrip() + (f"  error: {row.error}" if row.error else "")


def format_table(rows: Sequence[Row]) -> str:
    header = "".join(name.ljust(width) for name, width in COLUMNS).rstrip()
    return "\n".join([header, *(format_row(r) for r in rows)])


def run(s: Settings, modes: Sequence[Mode], data: Sequence[str],
        data_modes: Sequence[Mode]) -> list[Row]:
    rows = []
    print(format_table([]), flush=True)
    for row, make_step in plan_rows(s, modes, data, data_modes):
        rows.append(measure(row, make_step, s))
    add_ratios(rows)
    return rows


def report(s: Settings, rows: Sequence[Row], argv: Sequence[str], modes: Sequence[Mode],
           data: Sequence[str], data_modes: Sequence[Mode]) -> dict:
    settings = {k: (str(v) if isinstance(v, torch.device | Path) else v)
                for k, v in dataclasses.asdict(s).items()}
    settings.update(modes=[m.name for m in modes], data=list(data),
                    data_modes=[m.name for m in data_modes])
    return {
        "benchmark": "resnet50_trainer training throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/throughput.py", *argv]),
        "device": device_info(s.device),
        "versions": versions(),
        "settings": settings,
        "jpegs": describe_jpegs(s.jpeg_dir) if s.jpeg_dir is not None else None,
        "rows": [dataclasses.asdict(r) for r in rows],
    }


# ---------------------------------------------------------------- command line


def _mode(text: str) -> Mode:
    try:
        return Mode.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(
        prog="benchmarks/throughput.py",
        description="Training img/s of the trainer on one device, as ratios to a plain loop.",
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if cuda else "cpu",
                   help="default: cuda if a GPU is visible")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="images per step (default: 256 on cuda, 8 on cpu)")
    p.add_argument("--image-size", type=_positive, default=224, help="training crop (224)")
    p.add_argument("--steps", type=_positive, default=20, help="steps per timed window (20)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first, per row (10)")
    p.add_argument("--windows", type=_positive, default=5,
                   help="timed windows per row; the median is reported (5)")
    p.add_argument("--modes", nargs="+", default=["all"], metavar="MODE",
                   help="trainer modes on synthetic data, e.g. fp32 amp+cl bf16+cl+compile "
                   "(default: all 12)")
    p.add_argument("--data", nargs="+", choices=DATA_CHOICES, default=["synthetic"],
                   help="synthetic: the modes above; pytorch, gpu: the trainer's JPEG "
                   "backends, loader alone and end to end (default: synthetic)")
    p.add_argument("--data-modes", nargs="+", type=_mode, default=None, metavar="MODE",
                   help="modes of the end-to-end JPEG rows (default: amp+cl on cuda, fp32 "
                   "on cpu)")
    p.add_argument("--jpeg-dir", type=Path, default=None,
                   help=f"ImageNet-like set with train/ and val/ (default with --make-jpegs: "
                   f"{DEFAULT_JPEG_DIR})")
    p.add_argument("--make-jpegs", type=_positive, default=None, metavar="N",
                   help="first write N training JPEGs (~500x375, ~110 KB) to --jpeg-dir; "
                   "existing files are kept")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers for the JPEG rows (default: min(8, cores))")
    p.add_argument("--model", default="resnet50", help="torchvision model (resnet50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report")
    return p


def parse_args(argv: Sequence[str]) -> tuple[Settings, list[Mode], list[str], list[Mode], dict]:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible")
    try:
        modes = list(ALL_MODES) if args.modes == ["all"] else [Mode.parse(m) for m in args.modes]
    except ValueError as exc:
        parser.error(str(exc))
    data = list(dict.fromkeys(args.data))
    jpeg_dir = args.jpeg_dir
    if jpeg_dir is None and args.make_jpegs:
        jpeg_dir = Path(DEFAULT_JPEG_DIR)
    if jpeg_dir is None and any(d in JPEG_BACKENDS for d in data):
        parser.error("--data pytorch/gpu needs --jpeg-dir DIR or --make-jpegs N")
    batch = args.batch_size or (256 if device.type == "cuda" else 8)
    data_modes = args.data_modes or [Mode("amp", channels_last=True) if device.type == "cuda"
                                     else Mode("fp32")]
    s = Settings(device=device, batch_size=batch, image_size=args.image_size, steps=args.steps,
                 warmup=max(0, args.warmup), windows=args.windows, workers=max(0, args.workers),
                 model=args.model, lr=0.1 * batch / 256, seed=args.seed, jpeg_dir=jpeg_dir)
    return s, modes, data, data_modes, {"make_jpegs": args.make_jpegs, "json": args.json}


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    s, modes, data, data_modes, extra = parse_args(argv)
    if extra["make_jpegs"]:
        started = time.perf_counter()
        make_jpeg_set(s.jpeg_dir, extra["make_jpegs"], workers=os.cpu_count() or 1,
                      seed=s.seed)
        print(f"JPEG set {s.jpeg_dir}: {extra['make_jpegs']} training images ready in "
              f"{time.perf_counter() - started:.0f}s", flush=True)
    info, ver = device_info(s.device), versions()
    print(f"{info['name']} | " + " | ".join(f"{k} {v}" for k, v in ver.items()))
    print(f"batch {s.batch_size}, image {s.image_size}, {s.warmup} warm-up + {s.windows} x "
          f"{s.steps} steps per row, {s.model}\n", flush=True)
    rows = run(s, modes, data, data_modes)
    print("\n" + format_table(rows))
    result = report(s, rows, argv, modes, data, data_modes)
    if extra["json"] is not None:
        extra["json"].parent.mkdir(parents=True, exist_ok=True)
        extra["json"].write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {extra['json']}")
    return result


if __name__ == "__main__":
    main()
