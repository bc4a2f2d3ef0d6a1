"""Reading and decoding the image files, per backend.

  pytorch:   DataLoader workers open and decode each file with PIL (ImageSamples; for
             training SizedImageSamples, which also takes the crop size);
  gpu:       workers only read the file bytes (EncodedSamples, collate_encoded) and the
             main process decodes each batch on the device (decode_batch), with
             torchvision.io.decode_jpeg in one batched call; PNG and what nvJPEG cannot
             decode go through the CPU.
A file that cannot be read or decoded is a DataError that names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from resnet50_trainer.data.layouts import Sample
from resnet50_trainer.errors import DataError
from resnet50_trainer.seeds import seeded


class TrainKey(NamedTuple):
    """What the training dataset is asked for: which sample, at which crop size, and the
    seed of its augmentation's random draws."""

    index: int
    crop_size: int
    seed: int


# (all files' bytes end to end, each file's size, labels, paths, the seed of the batch's
# augmentation: its first sample's, None for validation)
EncodedBatch = tuple[torch.Tensor, list[int], torch.Tensor, list[str], int | None]


def read_rgb(sample: Sample) -> tuple[Any, int]:
    """The sample's image as an RGB PIL image, and its label; DataError names a bad file."""
    from PIL import Image

    path, label = sample
    try:
        with Image.open(path) as img:
            return img.convert("RGB"), label
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


class ImageSamples(Dataset):
    """(path, label) samples decoded with PIL; an unreadable file is a DataError naming it."""

    def __init__(self, samples: list[Sample], transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = read_rgb(self.samples[index])
        return self.transform(image), label


class SizedImageSamples(Dataset):
    """ImageSamples asked for by TrainKeys (samplers.TrainOrder): with progressive resizing
    the size changes between epochs, in persistent workers too, and each sample's random
    draws come from its own seed."""

    def __init__(self, samples: list[Sample], transform_for: Callable[[int], Callable]) -> None:
        self.samples = samples
        self.transform_for = transform_for  # crop size -> transform (picklable, for spawn)
        self.transforms: dict[int, Callable] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: TrainKey) -> tuple[torch.Tensor, int]:
        if key.crop_size not in self.transforms:
            self.transforms[key.crop_size] = self.transform_for(key.crop_size)
        image, label = read_rgb(self.samples[key.index])
        with seeded(key.seed):
            return self.transforms[key.crop_size](image), label


class EncodedSamples(Dataset):
    """(file bytes as a uint8 tensor, label, path, seed) asked for by index (validation) or
    TrainKey (training; the crop size is the DeviceTransform's); an unreadable file is a
    DataError."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | TrainKey) -> tuple[torch.Tensor, int, str, int | None]:
        index, seed = (key.index, key.seed) if isinstance(key, TrainKey) else (key, None)
        path, label = self.samples[index]
        try:
            with open(path, "rb") as f:
                data = bytearray(f.read())
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        if not data:  # frombuffer refuses an empty buffer; decoding names the file
            return torch.empty(0, dtype=torch.uint8), label, path, seed
        return torch.frombuffer(data, dtype=torch.uint8), label, path, seed


def collate_encoded(samples: list[tuple[torch.Tensor, int, str, int | None]]) -> EncodedBatch:
    """The files' bytes in one buffer: a worker hands over (and the loader pins) one
    tensor per batch, not one per image. The batch is augmented in one process, in order,
    so its first sample's seed decides all its draws."""
    return (torch.cat([s[0] for s in samples]), [len(s[0]) for s in samples],
            torch.tensor([s[1] for s in samples], dtype=torch.int64), [s[2] for s in samples],
            samples[0][3])


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

