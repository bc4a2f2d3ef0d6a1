"""Datasets, transforms and loaders behind one interface with a registry of backends.

Layouts of --data-path (the two the reference scripts use):
  folder:  train/<class>/*.JPEG and val/<class>/*.JPEG, classes sorted by name;
  list:    train_list.txt and val_list.txt, one "relative/path label" per line,
           the path relative to the root or to train/ (val/). Used when both lists exist.

Backends (--data-backend):
  pytorch:   DataLoader workers decode with PIL and transform on the CPU;
  gpu:       workers only read the file bytes; the main process decodes each batch with
             torchvision.io.decode_jpeg on the device and crops, flips and normalises there;
  synthetic: one random batch made once on the device, no disk I/O.
Every backend yields (images, labels) on the device; on CUDA the next batch is copied
(and for gpu, decoded) on a side stream while the current one trains.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.distributed import Placement
from resnet50_trainer.errors import ConfigError, DataError, access_error

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Sample = tuple[str, int]
log = logging.getLogger(__name__)


@dataclass
class Loaders:
    """What every data backend returns. Batches are (images NCHW float, int64 labels)."""

    train: Iterable[tuple[torch.Tensor, torch.Tensor]]
    val: Iterable[tuple[torch.Tensor, torch.Tensor]]
    train_steps: int  # batches per training epoch, equal on every rank
    val_size: int  # images in the whole validation set, over all ranks
    num_classes: int
    set_epoch: Callable[[int], None]  # reshuffles the training order for an epoch


@dataclass(frozen=True)
class DatasetIndex:
    train: list[Sample]
    val: list[Sample]
    num_classes: int
    layout: str
    classes: list[str] | None = None  # class folder names, folder layout only


# ---------------------------------------------------------------- discovery


def discover(data_path: str | os.PathLike[str]) -> DatasetIndex:
    """Find every sample under data_path; ConfigError names whatever is wrong."""
    try:
        return _discover(check_data_path(data_path))
    except PermissionError as exc:
        raise access_error("dataset path", Path(exc.filename or data_path), "readable",
                           exc) from None


def _discover(root: Path) -> DatasetIndex:
    if (root / "train_list.txt").is_file() and (root / "val_list.txt").is_file():
        train = read_list(root / "train_list.txt", root, "train")
        val = read_list(root / "val_list.txt", root, "val")
        num_classes = 1 + max(label for _, label in train)
        _check_val_labels(root / "val_list.txt", val, num_classes)
        return DatasetIndex(train, val, num_classes, layout="list")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ConfigError(
                f"data path {root} has no {split}/ folder and no train_list.txt/val_list.txt"
            )
    train_classes = _class_folders(root / "train")
    val_classes = _class_folders(root / "val")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise ConfigError(
            f"class folders differ between {root / 'train'} and {root / 'val'}: "
            f"only in train: {_few(only_train)}; only in val: {_few(only_val)}"
        )
    train = _scan(root / "train", train_classes)
    val = _scan(root / "val", val_classes)
    return DatasetIndex(train, val, len(train_classes), layout="folder", classes=train_classes)


def check_data_path(data_path: str | os.PathLike[str]) -> Path:
    root = Path(data_path)
    try:
        if not root.exists():
            raise ConfigError(f"data path {root} does not exist")
        if not root.is_dir():
            raise ConfigError(f"data path {root} is not a directory")
        os.scandir(root).close()
    except PermissionError as exc:
        raise access_error("dataset path", root, "readable", exc) from None
    return root


def _few(names: Sequence[str], limit: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _class_folders(split_dir: Path) -> list[str]:
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ConfigError(f"{split_dir} has no class folders (expected {split_dir}/<class>/*.JPEG)")
    return classes


def _scan(split_dir: Path, classes: list[str]) -> list[Sample]:
    samples: list[Sample] = []
    for label, name in enumerate(classes):
        files = sorted(
            e.path
            for e in os.scandir(split_dir / name)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ConfigError(f"class folder {split_dir / name} holds no images")
        samples.extend((path, label) for path in files)
    return samples


def read_list(list_file: Path, root: Path, split: str) -> list[Sample]:
    """Parse a "path label" list; paths are relative to root or to root/split."""
    samples: list[Sample] = []
    base: Path | None = None
    with open(list_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ConfigError(
                    f"{list_file}:{lineno}: expected 'relative/path label', got {line.strip()!r}"
                )
            rel, label = parts[0].strip(), int(parts[1])
            if base is None:  # one stat decides the prefix for the whole list
                base = next((b for b in (root, root / split) if (b / rel).is_file()), None)
                if base is None:
                    raise ConfigError(
                        f"{list_file}:{lineno}: {rel} is neither under {root} nor {root / split}"
                    )
            samples.append((str(base / rel), label))
    if not samples:
        raise ConfigError(f"{list_file} lists no images")
    return samples


def _check_val_labels(list_file: Path, val: list[Sample], num_classes: int) -> None:
    for path, label in val:
        if label >= num_classes:
            raise ConfigError(
                f"{list_file}: {path} has label {label}, but the training list has only "
                f"labels 0..{num_classes - 1}"
            )


# ---------------------------------------------------------------- datasets


def train_transform(crop_size: int) -> Callable:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(crop_size, antialias=True),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
            T.ConvertImageDtype(torch.float),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def val_transform(resize_size: int, crop_size: int) -> Callable:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize_size, antialias=True),
            T.CenterCrop(crop_size),
            T.PILToTensor(),
            T.ConvertImageDtype(torch.float),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageSamples(Dataset):
    """(path, label) samples decoded with PIL; an unreadable file is a DataError naming it."""

    def __init__(self, samples: list[Sample], transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        return self.transform(image), label


class ShardSampler(Sampler[int]):
    """Every index exactly once over all ranks, no padding (rank r takes r, r+W, ...).

    DistributedSampler pads the set to a multiple of the world size, which would count
    some validation images twice; evaluation must see each image exactly once.
    """

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class DeviceBatches:
    """The batches of `loader` turned into (images, labels) on `device` by `to_device`.

    On CUDA, batch i+1 is prepared on a side stream while the caller trains on batch i,
    so host-to-device copies (and, for the gpu backend, decoding) overlap with compute.
    Elsewhere it is a plain map.
    """

    def __init__(self, loader: DataLoader, to_device: Callable, device: torch.device) -> None:
        self.loader = loader
        self.to_device = to_device
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self.to_device(batch)
            return
        side = torch.cuda.Stream(self.device)
        batches = iter(self.loader)

        def prepare() -> tuple[torch.Tensor, torch.Tensor] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            with torch.cuda.stream(side):
                return self.to_device(batch)

        ready = prepare()
        while ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(side)
            for tensor in ready:  # made on the side stream, used and freed on this one
                tensor.record_stream(current)
            this, ready = ready, prepare()
            yield this


# ---------------------------------------------------------------- backends


@dataclass(frozen=True)
class _DiskPlan:
    """What the disk backends share: the index, the batch size and the classes."""

    index: DatasetIndex
    batch: int
    num_classes: int


def _plan_disk_loaders(cfg: TrainConfig, where: Placement) -> _DiskPlan:
    index = discover(cfg.data_path or "")
    log.info("Dataset %s (%s layout): %d training and %d validation images, %d classes",
             cfg.data_path, index.layout, len(index.train), len(index.val), index.num_classes)
    batch = cfg.per_process_batch(where.world_size)
    global_batch = batch * where.world_size
    if len(index.train) < global_batch:
        raise ConfigError(
            f"the training set has {len(index.train)} images, fewer than one global batch "
            f"({batch} per process x {where.world_size} processes)"
        )
    num_classes = cfg.num_classes or index.num_classes
    if num_classes < index.num_classes:
        raise ConfigError(
            f"--num-classes {num_classes} is smaller than the {index.num_classes} classes "
            f"of {cfg.data_path}"
        )
    return _DiskPlan(index, batch, num_classes)


def _disk_loaders(
    cfg: TrainConfig,
    where: Placement,
    plan: _DiskPlan,
    datasets: tuple[Dataset, Dataset],
    to_device: tuple[Callable, Callable],
    collate_fn: Callable | None = None,
) -> Loaders:
    """Training shuffled and evenly split over the ranks, validation split exactly once."""
    train_set, val_set = datasets
    train_sampler = DistributedSampler(
        train_set, num_replicas=where.world_size, rank=where.rank, shuffle=True, seed=cfg.seed
    )
    common = {
        "num_workers": cfg.workers,
        "pin_memory": where.device.type == "cuda",
        "persistent_workers": cfg.workers > 0,
        "collate_fn": collate_fn,
    }
    train = DataLoader(train_set, plan.batch, sampler=train_sampler, drop_last=True, **common)
    val = DataLoader(
        val_set, plan.batch, sampler=ShardSampler(len(val_set), where.rank, where.world_size),
        **common,
    )
    return Loaders(
        train=DeviceBatches(train, to_device[0], where.device),
        val=DeviceBatches(val, to_device[1], where.device),
        train_steps=len(train),
        val_size=len(val_set),
        num_classes=plan.num_classes,
        set_epoch=train_sampler.set_epoch,
    )


def _memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


class _ToDevice:
    """Moves a decoded (images, labels) batch to the device, in the model's memory format."""

    def __init__(self, device: torch.device, memory_format: torch.memory_format) -> None:
        self.device = device
        self.memory_format = memory_format

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        images, labels = batch
        return (images.to(self.device, non_blocking=True, memory_format=self.memory_format),
                labels.to(self.device, non_blocking=True))


def build_pytorch_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
    plan = _plan_disk_loaders(cfg, where)
    datasets = (
        ImageSamples(plan.index.train, train_transform(cfg.train_crop_size)),
        ImageSamples(plan.index.val, val_transform(cfg.val_resize_size, cfg.val_crop_size)),
    )
    to_device = _ToDevice(where.device, _memory_format(cfg))
    return _disk_loaders(cfg, where, plan, datasets, (to_device, to_device))


# The gpu backend: workers read bytes, the device decodes and augments.

# (all files' bytes end to end, each file's size, labels, paths)
EncodedBatch = tuple[torch.Tensor, list[int], torch.Tensor, list[str]]


class EncodedSamples(Dataset):
    """(file bytes as a uint8 tensor, label, path); an unreadable file is a DataError."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        path, label = self.samples[index]
        try:
            with open(path, "rb") as f:
                data = bytearray(f.read())
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        if not data:  # frombuffer refuses an empty buffer; decoding names the file
            return torch.empty(0, dtype=torch.uint8), label, path
        return torch.frombuffer(data, dtype=torch.uint8), label, path


def collate_encoded(samples: list[tuple[torch.Tensor, int, str]]) -> EncodedBatch:
    """The files' bytes in one buffer: a worker hands over (and the loader pins) one
    tensor per batch, not one per image."""
    return (torch.cat([s[0] for s in samples]), [len(s[0]) for s in samples],
            torch.tensor([s[1] for s in samples], dtype=torch.int64), [s[2] for s in samples])


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 2 and data[:2].tolist() == [0xFF, 0xD8]


def _reason(exc: Exception) -> str:
    """torchvision's message without its "decode_jpeg, file.cpp:171, " prefix."""
    return re.sub(r"^\w+, \S+:\d+, ", "", str(exc).strip().splitlines()[0])


def _decode_one(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
    """One image, on the device if it can, else on the CPU (PNG, or what nvJPEG lacks)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    if _is_jpeg(data) and device.type != "cpu":
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            pass
    try:
        return decode_image(data, mode=ImageReadMode.RGB).to(device, non_blocking=True)
    except RuntimeError as exc:
        raise DataError(f"cannot read image {path}: {_reason(exc)}") from None


def decode_batch(data: list[torch.Tensor], paths: list[str],
                 device: torch.device) -> list[torch.Tensor]:
    """uint8 CHW RGB images on `device`: the JPEGs in one batched decode_jpeg call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    jpegs = [i for i, d in enumerate(data) if _is_jpeg(d)]
    images: list[torch.Tensor | None] = [None] * len(data)
    try:
        decoded = (decode_jpeg([data[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
                   if jpegs else [])
    except RuntimeError:  # one bad file fails the whole call: find it, and decode the rest
        decoded = [_decode_one(data[i], paths[i], device) for i in jpegs]
    for i, image in zip(jpegs, decoded, strict=True):
        images[i] = image
    return [img if img is not None else _decode_one(data[i], paths[i], device)
            for i, img in enumerate(images)]


class DeviceTransform:
    """Decode a batch of file bytes on the device, then crop, flip, stack and normalise.

    Training: RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bilinear with antialias)
    and a horizontal flip at random, parameters drawn on the host as torchvision does.
    Validation: resize the shorter side, then a centre crop.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, train: bool) -> None:
        self.device = device
        self.train = train
        self.crop = cfg.train_crop_size if train else cfg.val_crop_size
        self.resize = cfg.val_resize_size
        self.memory_format = _memory_format(cfg)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def _train_crop(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as F

        top, left, height, width = RandomResizedCrop.get_params(
            image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        image = F.resized_crop(image, top, left, height, width, [self.crop, self.crop],
                               antialias=True)
        return F.horizontal_flip(image) if torch.rand(1).item() < 0.5 else image

    def _val_crop(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        image = F.resize(image, [self.resize], antialias=True)
        return F.center_crop(image, [self.crop, self.crop])

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        buffer, sizes, labels, paths = batch
        data = list(torch.split(buffer, sizes))
        crop = self._train_crop if self.train else self._val_crop
        images = torch.stack([crop(img) for img in decode_batch(data, paths, self.device)])
        images = images.contiguous(memory_format=self.memory_format)
        images = images.float().sub_(self.mean).div_(self.std)
        return images, labels.to(self.device, non_blocking=True)


def build_gpu_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
    plan = _plan_disk_loaders(cfg, where)
    datasets = (EncodedSamples(plan.index.train), EncodedSamples(plan.index.val))
    to_device = (DeviceTransform(cfg, where.device, train=True),
                 DeviceTransform(cfg, where.device, train=False))
    return _disk_loaders(cfg, where, plan, datasets, to_device, collate_fn=collate_encoded)


class SyntheticBatches:
    """`steps` batches of one random, normalised batch made once on the device."""

    def __init__(self, sizes: list[int], crop: int, num_classes: int, device: torch.device):
        self.sizes = sizes
        generator = torch.Generator().manual_seed(0)
        largest = max(sizes, default=0)
        self.images = torch.randn(largest, 3, crop, crop, generator=generator).to(device)
        self.labels = torch.randint(num_classes, (largest,), generator=generator).to(device)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for size in self.sizes:
            yield self.images[:size], self.labels[:size]


def build_synthetic_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
    batch = cfg.per_process_batch(where.world_size)
    steps = cfg.synthetic_train_size // (batch * where.world_size)
    if steps == 0:
        raise ConfigError(
            f"--synthetic-train-size {cfg.synthetic_train_size} is smaller than one global "
            f"batch ({batch} per process x {where.world_size} processes)"
        )
    num_classes = cfg.num_classes or 1000
    shard = len(range(where.rank, cfg.synthetic_val_size, where.world_size))
    val_sizes = [min(batch, shard - start) for start in range(0, shard, batch)]
    return Loaders(
        train=SyntheticBatches([batch] * steps, cfg.train_crop_size, num_classes, where.device),
        val=SyntheticBatches(val_sizes, cfg.val_crop_size, num_classes, where.device),
        train_steps=steps,
        val_size=cfg.synthetic_val_size,
        num_classes=num_classes,
        set_epoch=lambda epoch: None,
    )


BACKENDS: dict[str, Callable[[TrainConfig, Placement], Loaders]] = {
    "pytorch": build_pytorch_loaders,
    "gpu": build_gpu_loaders,
    "synthetic": build_synthetic_loaders,
}


def build_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
    return BACKENDS[cfg.data_backend](cfg, where)


# ---------------------------------------------------------------- batch mixing


def build_batch_mixer(
    cfg: TrainConfig, num_classes: int
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """torchvision's MixUp/CutMix (one of them at random per batch), applied on the device."""
    from torchvision.transforms import v2

    choices = []
    if cfg.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
    if cfg.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

