"""Datasets, transforms and loaders behind one interface with a registry of backends.

  layouts:     the two layouts of --data-path (class folders, list files) -> samples;
  index_cache: --cache-dataset, that list of samples kept in --output-dir;
  decode:      reading and decoding the image files, per backend;
  transforms:  crops, flips, augmentation policies, erasing and normalisation (on the
               CPU or the device), progressive resizing's crop sizes, MixUp/CutMix;
  samplers:    validation shards, repeated augmentation, the training order (crop sizes
               and seeds for the workers, a mid-epoch start);
  loaders:     the backends (--data-backend pytorch, gpu, synthetic): DataLoaders and
               batches on the device.

The names the rest of the trainer, the benchmarks and the tests use are re-exported here.
"""

from resnet50_trainer.data.decode import ImageSamples, TrainKey
from resnet50_trainer.data.layouts import DatasetIndex, check_data_path, discover
from resnet50_trainer.data.loaders import BACKENDS, Loaders, build_loaders
from resnet50_trainer.data.samplers import RepeatedSampler, ShardSampler, TrainOrder
from resnet50_trainer.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeviceTransform,
    build_batch_mixer,
    train_crop_size_at,
    train_transform,
    val_transform,
)

__all__ = [
    "BACKENDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetIndex",
    "DeviceTransform",
    "ImageSamples",
    "Loaders",
    "RepeatedSampler",
    "ShardSampler",
    "TrainKey",
    "TrainOrder",
    "build_batch_mixer",
    "build_loaders",
    "check_data_path",
    "discover",
    "train_crop_size_at",
    "train_transform",
    "val_transform",
]
