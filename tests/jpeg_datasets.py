"""Tiny datasets of real JPEG files on disk, in both layouts of --data-path."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

# Each class has its own dominant colour, so a network learns it in a few steps.
CLASS_COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (220, 220, 40)]


def write_image(path: Path, colour: tuple[int, int, int], rng: random.Random) -> None:
    """A real JPEG around 40 px: the class colour with noise, slightly varied sizes."""
    size = (rng.randint(36, 48), rng.randint(36, 48))
    img = Image.new("RGB", size, colour)
    pixels = img.load()
    for x in range(size[0]):
        for y in range(size[1]):
            r, g, b = pixels[x, y]
            n = rng.randint(-40, 40)
            pixels[x, y] = tuple(max(0, min(255, v + n)) for v in (r, g, b))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)


def make_folder_dataset(
    root: Path, classes: int = 3, train_per_class: int = 8, val_per_class: int = 3, seed: int = 0
) -> Path:
    """root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG, ImageNet style names."""
    rng = random.Random(seed)
    for c in range(classes):
        wnid = f"n{1440764 + c:08d}"
        for i in range(train_per_class):
            write_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", CLASS_COLOURS[c], rng)
        for i in range(val_per_class):
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{c * 100 + i:08d}.JPEG",
                        CLASS_COLOURS[c], rng)
    return root


def write_lists(root: Path, with_split_prefix: bool) -> None:
    """PaddleClas-style train_list.txt / val_list.txt for a folder dataset under root."""
    for split in ("train", "val"):
        classes = sorted(p.name for p in (root / split).iterdir())
        lines = []
        for label, wnid in enumerate(classes):
            for f in sorted((root / split / wnid).iterdir()):
                rel = f.relative_to(root if with_split_prefix else root / split)
                lines.append(f"{rel} {label}")
        (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n")

