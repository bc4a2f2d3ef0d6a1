"""Training augmentation, progressive resizing, repeated augmentation and the index cache."""

import logging
import shutil
from collections import Counter

import pytest
import torch
from jpeg_datasets import make_folder_dataset
from torch.utils.data import DistributedSampler

from resnet50_trainer.config import parse_config
from resnet50_trainer.data import (
    DeviceTransform,
    RepeatedSampler,
    TrainOrder,
    build_loaders,
    discover,
    index_cache,
    layouts,
    train_crop_size_at,
    train_transform,
    val_transform,
)
from resnet50_trainer.distributed import Placement

CPU = torch.device("cpu")
CROPS = ["--train-crop-size", "32", "--val-resize-size", "36", "--val-crop-size", "32"]
POLICIES = ["ra", "ta_wide", "augmix", "imagenet", "cifar10", "svhn"]


def config(*args, data_path=None):
    # No dataset index unless a test asks: it would land in the default --output-dir.
    where = ["--data-path", str(data_path), "--no-cache-dataset"] if data_path else [
        "--synthetic"]
    return parse_config([*where, "-b", "4", "-j", "0", *CROPS, *args])


def loaders(data_path, *args, backend="pytorch", rank=0, world=1):
    cfg = config("--data-backend", backend, *args, data_path=data_path)
    return build_loaders(cfg, Placement(rank, rank, world, CPU))


def names(compose) -> list[str]:
    return [type(t).__name__ for t in compose.transforms]


# ---------------------------------------------------------------- the pipelines

BASE = ["PILToTensor", "ConvertImageDtype", "Normalize"]


@pytest.mark.parametrize(("args", "expected"), [
    ([], ["RandomResizedCrop", "RandomHorizontalFlip", *BASE]),
    (["--auto-augment", "ta_wide", "--random-erase", "0.1"],
     ["RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide", *BASE,
      "RandomErasing"]),
    (["--auto-augment", "ra"], ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment",
                                *BASE]),
    (["--auto-augment", "augmix", "--hflip", "0"], ["RandomResizedCrop", "AugMix", *BASE]),
    (["--auto-augment", "imagenet"], ["RandomResizedCrop", "RandomHorizontalFlip",
                                      "AutoAugment", *BASE]),
    (["--use-v2", "--auto-augment", "ta_wide", "--random-erase", "0.1"],
     ["RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide", "PILToTensor",
      "ToDtype", "Normalize", "RandomErasing", "ToPureTensor"]),
])
def test_training_pipeline_holds_the_transforms_in_order(args, expected):
    assert names(train_transform(config(*args))) == expected


@pytest.mark.parametrize("use_v2", [[], ["--use-v2"]], ids=["v1", "v2"])
def test_training_pipeline_takes_the_options(use_v2):
    cfg = config(*use_v2, "--train-crop-scale", "0.25", "0.9", "--hflip", "0.3",
                 "--interpolation", "bicubic", "--auto-augment", "ra", "--ra-magnitude", "5",
                 "--random-erase", "0.2")
    crop, flip, policy, *_, erase = [t for t in train_transform(cfg).transforms
                                     if type(t).__name__ != "ToPureTensor"]
    module = "torchvision.transforms.v2" if use_v2 else "torchvision.transforms.transforms"
    assert type(crop).__module__.startswith(module)
    assert tuple(crop.scale) == (0.25, 0.9) and crop.interpolation.value == "bicubic"
    assert list(crop.size) == [32, 32]
    assert flip.p == 0.3 and erase.p == 0.2
    assert policy.magnitude == 5 and policy.interpolation.value == "bicubic"
    assert list(train_transform(cfg, crop_size=48).transforms[0].size) == [48, 48]


def test_policies_take_their_own_options():
    augmix = train_transform(config("--auto-augment", "augmix", "--augmix-severity", "5",
                                    "--interpolation", "bicubic"))
    assert augmix.transforms[2].severity == 5
    assert augmix.transforms[2].interpolation.value == "bilinear"  # AugMix warps tensors
    svhn = train_transform(config("--auto-augment", "svhn", "--interpolation", "nearest"))
    assert svhn.transforms[2].policy.value == "svhn"
    assert svhn.transforms[2].interpolation.value == "nearest"


@pytest.mark.parametrize("use_v2", [False, True])
def test_validation_pipeline_resizes_with_the_interpolation(use_v2):
    cfg = config("--interpolation", "bicubic", *(["--use-v2"] if use_v2 else []))
    pipeline = val_transform(cfg)
    assert names(pipeline)[:2] == ["Resize", "CenterCrop"]
    assert pipeline.transforms[0].interpolation.value == "bicubic"
    assert pipeline.transforms[0].size in (36, [36])


def test_device_transform_takes_the_same_options():
    cfg = config("--train-crop-scale", "0.5", "1", "--hflip", "0", "--interpolation",
                 "nearest-exact", "--auto-augment", "ta_wide", "--random-erase", "0.25")
    train, val = (DeviceTransform(cfg, CPU, train=t) for t in (True, False))
    assert type(train.policy).__name__ == "TrivialAugmentWide"
    assert train.policy.interpolation.value == "nearest"  # what a tensor's warps know
    assert train.erase.p == 0.25 and train.interpolation.value == "nearest-exact"
    assert val.policy is None and val.erase is None
    plain = DeviceTransform(config(), CPU, train=True)
    assert plain.policy is None and plain.erase is None
    bicubic = DeviceTransform(config("--interpolation", "bicubic", "--auto-augment", "ra"),
                              CPU, train=True)
    assert bicubic.interpolation.value == "bicubic"  # the crop
    assert bicubic.policy.interpolation.value == "bilinear"


# ---------------------------------------------------------------- on real images

@pytest.mark.parametrize("backend", ["pytorch", "gpu"])
@pytest.mark.parametrize(("policy", "interpolation"), [
    *((policy, "bicubic") for policy in POLICIES), ("ta_wide", "nearest-exact")])
def test_every_policy_gives_normalised_crops_on_both_backends(folder_dataset, backend, policy,
                                                              interpolation):
    lo = loaders(folder_dataset, "--auto-augment", policy, "--interpolation", interpolation,
                 backend=backend)
    images, labels = next(iter(lo.train))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and images.abs().mean() < 3


@pytest.mark.parametrize(("backend", "v2"), [("pytorch", []), ("pytorch", ["--use-v2"]),
                                             ("gpu", [])])
def test_random_erasing_comes_after_normalisation(folder_dataset, backend, v2):
    lo = loaders(folder_dataset, *v2, "--random-erase", "1", "--hflip", "0",
                 "--interpolation", "nearest", backend=backend)
    images, _ = next(iter(lo.train))
    assert type(images) is torch.Tensor and images.shape == (4, 3, 32, 32)
    # Erased to 0 after normalisation; no uint8 pixel normalises to exactly 0.
    assert all((image == 0).all(dim=0).sum() > 0 for image in images)
    val, _ = next(iter(lo.val))
    assert not (val == 0).all(dim=1).any()  # evaluation is not erased


# ---------------------------------------------------------------- progressive resizing

def test_crop_size_without_progressive_resizing_is_constant():
    cfg = config("--train-crop-size", "176", "--epochs", "5")
    assert [train_crop_size_at(cfg, e) for e in range(5)] == [176] * 5


@pytest.mark.parametrize(("ramp", "sizes"), [
    # 160 px until 0.7 x 16 = 11.2, 192 from 0.85 x 16 = 13.6; 170.7 rounds down to 160.
    (["0.7", "0.85"], [160] * 13 + [192] * 3),
    # FFCV's rn50_16_epochs.yaml (start_ramp 11, end_ramp 13): 176 rounds (half even) to 192.
    (["0.6875", "0.8125"], [160] * 12 + [192] * 4),
])
def test_crop_sizes_of_ffcv_16_epochs(ramp, sizes):
    cfg = config("--epochs", "16", "--progressive-resize-from", "160", "--train-crop-size",
                 "192", "--progressive-resize-ramp", *ramp)
    assert [train_crop_size_at(cfg, e) for e in range(16)] == sizes


@pytest.mark.parametrize(("args", "sizes"), [
    # Ramp over epochs 2..8: 144 -> 128, 160, 176 -> 192, 192, 208 -> 192 (round half even).
    (["--epochs", "10", "--progressive-resize-from", "128", "--train-crop-size", "224",
      "--progressive-resize-ramp", "0.2", "0.8"], [128] * 4 + [160] + [192] * 3 + [224] * 2),
    # Multiples of 32 outside [from, to] are clamped: 107 -> 96 -> 100.
    (["--epochs", "4", "--progressive-resize-from", "100", "--train-crop-size", "128",
      "--progressive-resize-ramp", "0", "1"], [100, 100, 128, 128]),
    # A ramp of no length: a jump.
    (["--epochs", "4", "--progressive-resize-from", "64", "--train-crop-size", "128",
      "--progressive-resize-ramp", "0.5", "0.5"], [64, 64, 64, 128]),
])
def test_crop_sizes_ramp_in_multiples_of_32(args, sizes):
    cfg = config(*args)
    assert [train_crop_size_at(cfg, e) for e in range(cfg.epochs)] == sizes


def test_the_training_order_carries_the_epochs_crop_size():
    cfg = config("--epochs", "2", "--progressive-resize-from", "32", "--train-crop-size", "64",
                 "--progressive-resize-ramp", "0.25", "0.5")
    inner = DistributedSampler(range(10), num_replicas=2, rank=1, seed=0)
    order = TrainOrder(inner, cfg, rank=1, batch=2)
    assert len(order) == 5
    assert [key.crop_size for key in order] == [32] * 5
    order.set_epoch(1)
    assert [(key.index, key.crop_size) for key in order] == [(index, 64) for index in inner]


def test_a_mid_epoch_start_yields_the_rest_of_the_order_with_the_same_seeds():
    cfg = config("--seed", "7")
    order = TrainOrder(DistributedSampler(range(20), num_replicas=2, rank=0, seed=7), cfg,
                       rank=0, batch=3)
    order.set_epoch(2)
    whole = list(order)
    order.set_epoch(2, first_batch=2)
    assert len(order) == 10 - 6
    assert list(order) == whole[6:]
    assert len({key.seed for key in whole}) == len(whole)  # every position its own draws
    order.set_epoch(3)
    assert {key.seed for key in order}.isdisjoint(key.seed for key in whole)
    other_rank = TrainOrder(DistributedSampler(range(20), num_replicas=2, rank=1, seed=7),
                            cfg, rank=1, batch=3)
    other_rank.set_epoch(2)
    assert {key.seed for key in other_rank}.isdisjoint(key.seed for key in whole)


PROGRESSIVE = ["--epochs", "2", "--progressive-resize-from", "32", "--train-crop-size", "64",
               "--progressive-resize-ramp", "0.25", "0.5"]


@pytest.mark.parametrize(("backend", "workers"), [("pytorch", "2"), ("gpu", "2"),
                                                  ("gpu", "0")])
def test_batches_grow_between_epochs_with_persistent_workers(folder_dataset, backend, workers):
    lo = loaders(folder_dataset, *PROGRESSIVE, "-j", workers, backend=backend)
    shapes = []
    for epoch in range(2):
        lo.set_epoch(epoch)
        shapes.append({tuple(images.shape) for images, _ in lo.train})
        assert {tuple(images.shape) for images, _ in lo.val} == {(4, 3, 32, 32), (1, 3, 32, 32)}
    assert shapes == [{(4, 3, 32, 32)}, {(4, 3, 64, 64)}]
    assert lo.train.loader.persistent_workers == (workers != "0")


def test_synthetic_batches_ignore_progressive_resizing():
    cfg = parse_config(["--synthetic", "--synthetic-train-size", "8", "-b", "4", *CROPS,
                        *PROGRESSIVE])
    lo = build_loaders(cfg, Placement(0, 0, 1, CPU))
    lo.set_epoch(0)
    assert next(iter(lo.train))[0].shape == (4, 3, 64, 64)


# ---------------------------------------------------------------- repeated augmentation

@pytest.mark.parametrize(("size", "world", "reps"),
                         [(24, 1, 3), (24, 2, 3), (25, 4, 3), (10, 3, 4), (7, 2, 1)])
def test_repeated_sampler_keeps_the_plain_length_and_repeats(size, world, reps):
    samplers = [RepeatedSampler(size, rank, world, reps, seed=0) for rank in range(world)]
    plain = len(DistributedSampler(range(size), num_replicas=world, rank=0))
    assert [len(s) for s in samplers] == [plain] * world
    assert all(len(list(s)) == plain for s in samplers)
    # Before the ranks keep their share: every index reps times, in a row, padded to W.
    repeated = samplers[0].repeated()
    assert len(repeated) % world == 0
    assert Counter(repeated[:size * reps]) == {i: reps for i in range(size)}
    assert all(repeated[k] == repeated[k - k % reps] for k in range(size * reps))
    # The ranks together keep the head of that list, rank r every W-th from r.
    kept = [i for s in samplers for i in s]
    assert Counter(kept) == Counter(repeated[:plain * world])


def test_copies_of_an_image_go_to_different_ranks():
    samplers = [RepeatedSampler(48, rank, 4, reps=3, seed=5) for rank in range(4)]
    per_rank = [list(s) for s in samplers]
    assert all(len(set(indices)) == len(indices) == 12 for indices in per_rank)
    assert all(n == 3 for n in Counter(i for indices in per_rank for i in indices).values())


def test_repeated_sampler_order_follows_seed_and_epoch():
    def order(seed, epoch):
        sampler = RepeatedSampler(40, 1, 2, reps=3, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4)
    assert order(0, 3) != order(1, 3)


@pytest.mark.parametrize("backend", ["pytorch", "gpu"])
def test_ra_sampler_keeps_the_steps_per_epoch(folder_dataset, backend):
    plain = [loaders(folder_dataset, "-b", "2", rank=r, world=2, backend=backend)
             for r in range(2)]
    ra = [loaders(folder_dataset, "-b", "2", "--ra-sampler", "--ra-reps", "4", rank=r,
                  world=2, backend=backend) for r in range(2)]
    assert [lo.train_steps for lo in ra] == [lo.train_steps for lo in plain] == [6, 6]
    assert isinstance(ra[0].train.loader.sampler, TrainOrder)
    assert isinstance(ra[0].train.loader.sampler.sampler, RepeatedSampler)
    ra[0].set_epoch(1)
    assert sum(len(labels) for _, labels in ra[0].train) == 12


# ---------------------------------------------------------------- the index cache

@pytest.fixture
def counted_discover(monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return discover(*args, **kwargs)

    monkeypatch.setattr(index_cache, "discover", counting)
    return calls


def test_index_is_written_then_read(tmp_path, folder_dataset, counted_discover, caplog):
    caplog.set_level(logging.INFO, logger=index_cache.__name__)
    out = tmp_path / "out"
    cached = out / "dataset-index.json"
    first = index_cache.cached_discover(folder_dataset, None, out, is_main=True)
    assert len(counted_discover) == 1 and cached.is_file()
    assert any(m.startswith(f"dataset index written to {cached}:") for m in caplog.messages)
    assert not list(out.glob(".*tmp*"))
    second = index_cache.cached_discover(folder_dataset, None, out, is_main=True)
    assert len(counted_discover) == 1 and second == first == discover(folder_dataset)
    assert any(m.startswith(f"dataset index read from {cached}:") for m in caplog.messages)
    # Another --num-classes checks labels otherwise: indexed again.
    index_cache.cached_discover(folder_dataset, 5, out, is_main=True)
    assert len(counted_discover) == 2


def test_a_new_class_folder_is_indexed_again(tmp_path, folder_dataset, counted_discover):
    root = shutil.copytree(folder_dataset, tmp_path / "ds")
    out = tmp_path / "out"
    assert index_cache.cached_discover(root, None, out, is_main=True).num_classes == 3
    make_folder_dataset(tmp_path / "more", classes=4, train_per_class=2, val_per_class=1)
    for split in ("train", "val"):
        shutil.copytree(tmp_path / "more" / split / "n01440767", root / split / "n01440767")
    index = index_cache.cached_discover(root, None, out, is_main=True)
    assert index.num_classes == 4 and len(index.train) == 3 * 8 + 2
    assert len(counted_discover) == 2
    assert index_cache.cached_discover(root, None, out, is_main=True) == index
    assert len(counted_discover) == 2


def test_only_the_main_rank_writes(tmp_path, folder_dataset, counted_discover):
    out = tmp_path / "out"
    index_cache.cached_discover(folder_dataset, None, out, is_main=False)
    assert not out.exists()
    index_cache.cached_discover(folder_dataset, None, out, is_main=True)
    index_cache.cached_discover(folder_dataset, None, out, is_main=False)  # but reads
    assert len(counted_discover) == 2


def test_a_damaged_index_is_replaced(tmp_path, folder_dataset, counted_discover):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset-index.json").write_text('{"fingerprint": ')
    index = index_cache.cached_discover(folder_dataset, None, out, is_main=True)
    assert index == index_cache.cached_discover(folder_dataset, None, out, is_main=True)
    assert len(counted_discover) == 1


def test_loaders_keep_the_index_unless_told_not_to(tmp_path, folder_dataset, counted_discover):
    out = tmp_path / "out"
    for _ in range(2):
        cfg = parse_config(["--data-path", str(folder_dataset), "-b", "4", "-j", "0", *CROPS,
                            "--output-dir", str(out)])
        assert build_loaders(cfg, Placement(0, 0, 1, CPU)).train_steps == 6
    assert len(counted_discover) == 1 and (out / "dataset-index.json").is_file()
    loaders(folder_dataset, "--output-dir", str(tmp_path / "off"))  # --no-cache-dataset
    assert not (tmp_path / "off").exists()


def test_a_long_listing_reports_its_progress(folder_dataset, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=layouts.__name__)
    monkeypatch.setattr(layouts, "PROGRESS_SECONDS", 0.0)  # report after every class folder
    discover(folder_dataset)
    progress = [m for m in caplog.messages if m.startswith("indexing ")]
    assert progress[0].startswith(f"indexing {folder_dataset / 'train'}: 1 of 3 class folders, ")
    assert progress[-1].startswith(f"indexing {folder_dataset / 'val'}: 3 of 3 class folders, ")
    assert all(m.endswith(" files/s") for m in progress)
