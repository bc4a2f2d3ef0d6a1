"""Where the images of --data-path are: the two layouts the reference scripts use.

  folder:  train/<class>/*.JPEG and val/<class>/*.JPEG, classes sorted by name;
  list:    train_list.txt and val_list.txt, one "relative/path label" per line,
           the path relative to the root or to train/ (val/). Used when both lists exist.
           UTF-8 (a BOM is dropped); the training labels must be 0..N-1 unless
           --num-classes says how many there are.

discover() returns every (path, label) sample; whatever is wrong is a ConfigError that
names it (an AccessError when this uid may not read it).
"""

from __future__ import annotations

import codecs
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resnet50_trainer.errors import ConfigError, access_error

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Sample = tuple[str, int]
# A scan of a network file system can take minutes: say how far it got this often.
PROGRESS_SECONDS = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetIndex:
    train: list[Sample]
    val: list[Sample]
    num_classes: int
    layout: str
    classes: list[str] | None = None  # class folder names, folder layout only



def discover(data_path: str | os.PathLike[str], num_classes: int | None = None) -> DatasetIndex:
    """Find every sample under data_path; ConfigError names whatever is wrong.

    num_classes is --num-classes: when given, list labels need only be below it."""
    try:
        return _discover(check_data_path(data_path), num_classes)
    except PermissionError as exc:
        raise access_error("dataset path", Path(exc.filename or data_path), "readable",
                           exc) from None


def _discover(root: Path, given_classes: int | None) -> DatasetIndex:
    if (root / "train_list.txt").is_file() and (root / "val_list.txt").is_file():
        train_file, val_file = root / "train_list.txt", root / "val_list.txt"
        train, train_lines = read_list(train_file, root, "train")
        val, val_lines = read_list(val_file, root, "val")
        num_classes = 1 + max(label for _, label in train)
        if given_classes is not None:
            why = f"--num-classes is {given_classes} (labels 0..{given_classes - 1})"
            _check_below(train_file, train, train_lines, given_classes, why)
            _check_below(val_file, val, val_lines, given_classes, why)
        else:
            _check_no_gaps(train_file, train, train_lines, num_classes)
            _check_below(val_file, val, val_lines, num_classes,
                         f"the training list has only labels 0..{num_classes - 1}")
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
    started = last_report = time.monotonic()
    for label, name in enumerate(classes):
        files = sorted(
            e.path
            for e in os.scandir(split_dir / name)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ConfigError(f"class folder {split_dir / name} holds no images")
        samples.extend((path, label) for path in files)
        now = time.monotonic()
        if now - last_report >= PROGRESS_SECONDS:
            last_report = now
            log.info("indexing %s: %d of %d class folders, %d files, %.0f files/s",
                     split_dir, label + 1, len(classes), len(samples),
                     len(samples) / (now - started))
    return samples


def read_list(list_file: Path, root: Path, split: str) -> tuple[list[Sample], list[int]]:
    """Parse a "path label" list; paths are relative to root or to root/split.

    Returns the samples and the line number of each, for the label checks' messages."""
    samples: list[Sample] = []
    lines: list[int] = []
    base: Path | None = None
    for lineno, line in enumerate(_read_utf8(list_file), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        try:
            label = int(parts[1]) if len(parts) == 2 else None
        except ValueError:  # int() rather than isdigit(): "²" is a digit int() refuses
            label = None
        if label is None:
            raise ConfigError(
                f"{list_file}:{lineno}: expected 'relative/path label', got {line.strip()!r}"
            )
        if label < 0:
            raise ConfigError(f"{list_file}:{lineno}: label {label} is negative; labels "
                              "start at 0")
        rel = parts[0].strip()
        if base is None:  # one stat decides the prefix for the whole list
            base = next((b for b in (root, root / split) if (b / rel).is_file()), None)
            if base is None:
                raise ConfigError(
                    f"{list_file}:{lineno}: {rel} is neither under {root} nor {root / split}"
                )
        samples.append((str(base / rel), label))
        lines.append(lineno)
    if not samples:
        raise ConfigError(f"{list_file} lists no images")
    return samples, lines


def _read_utf8(list_file: Path) -> list[str]:
    """The lines of list_file as UTF-8, less a BOM (else it would end up in the first
    path); a byte that is not UTF-8 is a ConfigError naming its line, not a traceback."""
    data = list_file.read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")  # what "utf-8-sig" does, offsets kept
    except UnicodeDecodeError as exc:
        at = bom + exc.start
        lineno = data.count(b"\n", 0, at) + 1
        column = at - data.rfind(b"\n", 0, at)
        raise ConfigError(f"{list_file}:{lineno}: not UTF-8 (byte 0x{data[at]:02x} at column "
                          f"{column}); save the list as UTF-8") from None
    return text.split("\n")


def _check_below(list_file: Path, samples: list[Sample], lines: list[int], limit: int,
                 why: str) -> None:
    for (_, label), lineno in zip(samples, lines, strict=True):
        if label >= limit:
            raise ConfigError(f"{list_file}:{lineno}: has label {label}, but {why}")


def _check_no_gaps(list_file: Path, samples: list[Sample], lines: list[int],
                   num_classes: int) -> None:
    """Labels 1..N or a typo like 999 would otherwise give a head of the wrong size."""
    present = {label for _, label in samples}
    missing = sorted(set(range(num_classes)) - present)
    if not missing:
        return
    first = min(present)
    if missing == list(range(first)):
        raise ConfigError(
            f"{list_file}: labels start at {first}: they must start at 0 (subtract {first} "
            f"from every label of both lists), or give --num-classes {num_classes} if "
            f"labels below {first} are meant to be unused"
        )
    largest = max(range(len(samples)), key=lambda i: samples[i][1])
    raise ConfigError(
        f"{list_file}: labels 0..{num_classes - 1} expected (1 + the largest), "
        f"{len(missing)} missing: {_few(_runs(missing))}; the largest, {num_classes - 1}, "
        f"is on line {lines[largest]}; give --num-classes if the gaps are meant"
    )


def _runs(numbers: list[int]) -> list[str]:
    """Sorted numbers as ranges: [1, 2, 3, 7] -> ["1-3", "7"]."""
    runs: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return runs
