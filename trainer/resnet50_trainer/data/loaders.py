"""The data backends (--data-backend): samplers, DataLoaders and batches on the device.

  pytorch:   DataLoader workers decode with PIL and transform on the CPU;
  gpu:       workers only read the file bytes; the main process decodes each batch with
             torchvision.io.decode_jpeg on the device and crops, augments and normalises
             there;
  synthetic: one random batch made once on the device, no disk I/O.
Every backend yields (images, labels) on the device; on CUDA the next batch is copied
(and for gpu, decoded) on a side stream while the current one trains.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.data.decode import (
    EncodedSamples,
    ImageSamples,
    SizedImageSamples,
    collate_encoded,
)
from resnet50_trainer.data.index_cache import cached_discover
from resnet50_trainer.data.layouts import DatasetIndex, discover
from resnet50_trainer.data.samplers import RepeatedSampler, ShardSampler, TrainOrder
from resnet50_trainer.data.transforms import (
    DeviceTransform,
    memory_format,
    train_crop_size_at,
    train_transform,
    val_transform,
)
from resnet50_trainer.distributed import Placement
from resnet50_trainer.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Loaders:
    """What every data backend returns. Batches are (images NCHW float, int64 labels)."""

    train: Iterable[tuple[torch.Tensor, torch.Tensor]]
    val: Iterable[tuple[torch.Tensor, torch.Tensor]]
    train_steps: int  # batches per training epoch, equal on every rank
    val_size: int  # images in the whole validation set, over all ranks
    num_classes: int
    # set_epoch(epoch, first_batch=0): the training order of `epoch` from batch
    # `first_batch` on (a mid-epoch checkpoint's), at the epoch's crop size.
    set_epoch: Callable[..., None]


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



@dataclass(frozen=True)
class _DiskPlan:
    """What the disk backends share: the index, the batch size and the classes."""

    index: DatasetIndex
    batch: int
    num_classes: int


def _plan_disk_loaders(cfg: TrainConfig, where: Placement) -> _DiskPlan:
    started = time.monotonic()
    if cfg.cache_dataset:
        index = cached_discover(cfg.data_path or "", cfg.num_classes, cfg.output_dir,
                                where.is_main)
    else:
        index = discover(cfg.data_path or "", cfg.num_classes)
    log.info("Dataset %s (%s layout): %d training and %d validation images, %d classes "
             "(indexed in %.1f s)", cfg.data_path, index.layout, len(index.train),
             len(index.val), index.num_classes, time.monotonic() - started)
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


def leave_the_process_group(worker_id: int) -> None:
    """A DataLoader worker leaves its training process's process group: torchrun stops a
    worker by signalling that whole group, and the training process needs its DataLoader
    workers until every rank has reached the step it stops at (stopping.py). Its own
    shutdown signals each worker directly, which then ends at once (not the training
    process's SIGTERM handler, which it inherited), and a worker whose training process is
    gone exits by itself."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _train_order(cfg: TrainConfig, where: Placement, plan: _DiskPlan) -> TrainOrder:
    """Shuffled and evenly split over the ranks (with --ra-sampler, repeated augmentation),
    as TrainKeys."""
    size = len(plan.index.train)
    if cfg.ra_sampler:
        sampler: Sampler[int] = RepeatedSampler(size, where.rank, where.world_size,
                                                cfg.ra_reps, cfg.seed)
    else:
        sampler = DistributedSampler(range(size), num_replicas=where.world_size,
                                     rank=where.rank, shuffle=True, seed=cfg.seed)
    return TrainOrder(sampler, cfg, where.rank, plan.batch)


def _disk_loaders(
    cfg: TrainConfig,
    where: Placement,
    plan: _DiskPlan,
    datasets: tuple[Dataset, Dataset],
    to_device: tuple[Callable, Callable],
    train_sampler: Sampler,
    set_epoch: Callable[..., None],
    collate_fn: Callable | None = None,
) -> Loaders:
    """Training by `train_sampler`, validation split exactly once over the ranks."""
    train_set, val_set = datasets
    common = {
        "num_workers": cfg.workers,
        "worker_init_fn": leave_the_process_group,
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
        set_epoch=set_epoch,
    )


class _CropSizeLog:
    """Says when progressive resizing changes the training crop size (and where it starts)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.size: int | None = None

    def __call__(self, epoch: int) -> None:
        size = train_crop_size_at(self.cfg, epoch)
        if self.cfg.progressive_resize_from is not None and size != self.size:
            log.info("Training crops of %d px from epoch %d (progressive resizing)", size, epoch)
        self.size = size


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
        SizedImageSamples(plan.index.train, partial(train_transform, cfg)),
        ImageSamples(plan.index.val, val_transform(cfg)),
    )
    # The crop size and the seeds reach the (persistent) workers with every index.
    sampler = _train_order(cfg, where, plan)
    say_size = _CropSizeLog(cfg)

    def set_epoch(epoch: int, first_batch: int = 0) -> None:
        sampler.set_epoch(epoch, first_batch)
        say_size(epoch)

    to_device = _ToDevice(where.device, memory_format(cfg))
    return _disk_loaders(cfg, where, plan, datasets, (to_device, to_device), sampler, set_epoch)


def build_gpu_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
    plan = _plan_disk_loaders(cfg, where)
    datasets = (EncodedSamples(plan.index.train), EncodedSamples(plan.index.val))
    # Crops are made in this process: the DeviceTransform itself takes the epoch's size.
    train_device = DeviceTransform(cfg, where.device, train=True)
    to_device = (train_device, DeviceTransform(cfg, where.device, train=False))
    sampler = _train_order(cfg, where, plan)
    say_size = _CropSizeLog(cfg)

    def set_epoch(epoch: int, first_batch: int = 0) -> None:
        sampler.set_epoch(epoch, first_batch)
        train_device.set_epoch(epoch)
        say_size(epoch)

    return _disk_loaders(cfg, where, plan, datasets, to_device, sampler, set_epoch,
                         collate_fn=collate_encoded)


class SyntheticBatches:
    """`steps` batches of one random, normalised batch made once on the device."""

    def __init__(self, sizes: list[int], crop: int, num_classes: int, device: torch.device):
        self.sizes = sizes
        self.start = 0  # the first batch of the next pass (a mid-epoch checkpoint's)
        generator = torch.Generator().manual_seed(0)
        largest = max(sizes, default=0)
        self.images = torch.randn(largest, 3, crop, crop, generator=generator).to(device)
        self.labels = torch.randint(num_classes, (largest,), generator=generator).to(device)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for size in self.sizes[self.start:]:
            yield self.images[:size], self.labels[:size]


def build_synthetic_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
    # No progressive resizing, repeated augmentation or augmentation at all: one batch of
    # noise at --train-crop-size, for throughput and smoke tests.
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
    train = SyntheticBatches([batch] * steps, cfg.train_crop_size, num_classes, where.device)

    def set_epoch(epoch: int, first_batch: int = 0) -> None:
        train.start = first_batch

    return Loaders(
        train=train,
        val=SyntheticBatches(val_sizes, cfg.val_crop_size, num_classes, where.device),
        train_steps=steps,
        val_size=cfg.synthetic_val_size,
        num_classes=num_classes,
        set_epoch=set_epoch,
    )


BACKENDS: dict[str, Callable[[TrainConfig, Placement], Loaders]] = {
    "pytorch": build_pytorch_loaders,
    "gpu": build_gpu_loaders,
    "synthetic": build_synthetic_loaders,
}


def build_loaders(cfg: TrainConfig, where: Placement) -> Loaders:
    return BACKENDS[cfg.data_backend](cfg, where)
