"""The gpu data backend, run on the CPU: workers read bytes, decode_jpeg decodes batches."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from jpeg_datasets import make_folder_dataset
from PIL import Image

from resnet50_trainer.config import parse_config
from resnet50_trainer.data import build_loaders
from resnet50_trainer.distributed import Placement
from resnet50_trainer.errors import EXIT_DATA, DataError
from resnet50_trainer.progress import read_metrics

CPU = torch.device("cpu")
CROPS = ["--train-crop-size", "32", "--val-resize-size", "36", "--val-crop-size", "32"]


def loaders(data_path, *args, backend="gpu", rank=0, world=1):
    cfg = parse_config(["--data-path", str(data_path), "--no-cache-dataset", "--data-backend",
                        backend, "-b", "4", "-j", "0", *CROPS, *args])
    return build_loaders(cfg, Placement(rank, rank, world, CPU))


def all_val_images(lo):
    return torch.cat([images for images, _ in lo.val])


def test_training_batches_are_normalised_crops_on_the_device(folder_dataset):
    lo = loaders(folder_dataset)
    assert lo.train_steps == 6 and lo.num_classes == 3 and lo.val_size == 9
    images, labels = next(iter(lo.train))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert images.device == CPU and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() < 3
    assert images.min() < 0 < images.max() and images.abs().mean() < 3  # not 0..1, not 0..255


def test_validation_images_match_the_pytorch_backend(folder_dataset):
    gpu = all_val_images(loaders(folder_dataset))
    pytorch = all_val_images(loaders(folder_dataset, backend="pytorch"))
    assert gpu.shape == pytorch.shape == (9, 3, 32, 32)
    # Same resize and centre crop; decoders and resamplers differ by a grey level or two.
    assert (gpu - pytorch).abs().mean() < 0.02


def test_validation_is_sharded_exactly_once_over_two_ranks(odd_val_dataset):
    per_rank = [loaders(odd_val_dataset, "-b", "2", rank=r, world=2) for r in range(2)]
    assert [lo.train_steps for lo in per_rank] == [2, 2]  # 8 images / (2 x 2)
    assert [lo.val_size for lo in per_rank] == [7, 7]
    shards = [all_val_images(lo) for lo in per_rank]
    assert [len(s) for s in shards] == [4, 3]
    # Rank r holds images r, r+2, ...: interleaved, the shards are the whole set in order.
    whole = all_val_images(loaders(odd_val_dataset, "-b", "2"))
    interleaved = torch.empty_like(whole)
    interleaved[0::2], interleaved[1::2] = shards
    assert torch.equal(interleaved, whole)


def test_workers_read_bytes_and_batches_follow_channels_last(folder_dataset):
    lo = loaders(folder_dataset, "-j", "2", "--channels-last")
    batches = list(lo.train)
    assert len(batches) == lo.train_steps == 6
    assert all(images.is_contiguous(memory_format=torch.channels_last)
               for images, _ in batches)
    assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == [0] * 8 + [1] * 8 + [
        2] * 8


def test_augmentation_follows_the_seed(folder_dataset):
    first = []
    for _ in range(2):
        torch.manual_seed(7)
        first.append(next(iter(loaders(folder_dataset).train))[0])
    assert torch.equal(first[0], first[1])


def test_grayscale_cmyk_and_png_files_become_rgb(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", classes=1, train_per_class=4, val_per_class=3)
    val = sorted((root / "val" / "n01440764").iterdir())
    with Image.open(val[0]) as img:
        img.convert("L").save(val[0], "JPEG")
    with Image.open(val[1]) as img:
        img.convert("CMYK").save(val[1], "JPEG")
    with Image.open(val[2]) as img:
        img.save(val[2], "PNG")  # ImageNet holds a PNG named .JPEG, too
    images = all_val_images(loaders(root))
    assert images.shape == (3, 3, 32, 32)
    pytorch = all_val_images(loaders(root, backend="pytorch"))
    assert (images - pytorch).abs().mean() < 0.05


@pytest.mark.parametrize("content", [b"\xff\xd8\xff\xe0" + b"not the rest of a jpeg" * 10,
                                     b""], ids=["corrupt", "empty"])
def test_undecodable_file_is_named(tmp_path, folder_dataset, content):
    root = tmp_path / "ds"
    shutil.copytree(folder_dataset, root)
    bad = sorted((root / "val" / "n01440765").iterdir())[1]
    bad.write_bytes(content)
    with pytest.raises(DataError, match=f"cannot read image {bad}: "):
        all_val_images(loaders(root))


def test_unreadable_file_in_a_worker_is_named(tmp_path, folder_dataset):
    root = tmp_path / "ds"
    shutil.copytree(folder_dataset, root)
    lo = loaders(root, "-j", "1")
    gone = sorted((root / "val" / "n01440766").iterdir())[0]
    gone.unlink()  # after the scan, as a file that vanishes during training
    with pytest.raises(DataError, match=f"cannot read image {gone}"):
        all_val_images(lo)


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resnet50_trainer", "--data-backend", "gpu", "--device", "cpu",
         "-b", "4", "--print-freq", "1", *CROPS, *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_trainer_trains_and_evaluates_with_the_gpu_backend(tmp_path, folder_dataset):
    out = tmp_path / "out"
    proc = train("--data-path", str(folder_dataset), "--epochs", "1", "-j", "2",
                 "--channels-last", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["val_images"] == 9


@pytest.mark.slow
def test_trainer_exits_3_naming_a_corrupt_jpeg(tmp_path, folder_dataset):
    root = tmp_path / "ds"
    shutil.copytree(folder_dataset, root)
    bad = sorted((root / "train" / "n01440764").iterdir())[0]
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    proc = train("--data-path", str(root), "--epochs", "1", "-b", "24", "-j", "0",
                 "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == EXIT_DATA, proc.stderr
    assert f"resnet50-train: error: cannot read image {bad}: " in proc.stderr
