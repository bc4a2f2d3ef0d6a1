"""Datasets, transforms and loaders behind one interface with a registry of backends.

Layouts of --data-path (the two the reference scripts use):
  folder:  train/<class>/*.JPEG and val/<class>/*.JPEG, classes sorted by name;
  list:    train_list.txt and val_list.txt, one "relative/path label" per line,
           the path relative to the root or to train/ (val/). Used when both lists exist.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.distributed import Placement
from resnet50_trainer.errors import ConfigError, DataError

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
    root = check_data_path(data_path)
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
    if not root.exists():
        raise ConfigError(f"data path {root} does not exist")
    if not root.is_dir():
        raise ConfigError(f"data path {root} is not a directory")
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


# ---------------------------------------------------------------- backends


def build_pytorch_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
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
    train_set = ImageSamples(index.train, train_transform(cfg.train_crop_size))
    val_set = ImageSamples(index.val, val_transform(cfg.val_resize_size, cfg.val_crop_size))
    train_sampler = DistributedSampler(
        train_set, num_replicas=where.world_size, rank=where.rank, shuffle=True, seed=cfg.seed
    )
    common = {
        "num_workers": cfg.workers,
        "pin_memory": where.device.type == "cuda",
        "persistent_workers": cfg.workers > 0,
    }
    train = DataLoader(train_set, batch, sampler=train_sampler, drop_last=True, **common)
    val = DataLoader(
        val_set, batch, sampler=ShardSampler(len(val_set), where.rank, where.world_size), **common
    )
    return Loaders(train, val, len(train), len(val_set), num_classes, train_sampler.set_epoch)


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

