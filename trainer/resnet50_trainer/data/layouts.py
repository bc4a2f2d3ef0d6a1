"""Where the images of --data-path are: the two layouts the reference scripts use.

  folder:  train/<class>/*.JPEG and val/<class>/*.JPEG, classes sorted by name;
  list:    train_list.txt and val_list.txt, one "relative/path label" per line,
           the path relative to the root or to train/ (val/). Used when both lists exist.

discover() returns every (path, label) sample; whatever is wrong is a ConfigError that
names it (an AccessError when this uid may not read it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resnet50_trainer.errors import ConfigError, access_error

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Sample = tuple[str, int]


@dataclass(frozen=True)
class DatasetIndex:
    train: list[Sample]
    val: list[Sample]
    num_classes: int
    layout: str
    classes: list[str] | None = None  # class folder names, folder layout only



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

