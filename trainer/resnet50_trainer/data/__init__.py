"""Datasets, transforms and loaders behind one interface with a registry of backends.

  layouts:    the two layouts of --data-path (class folders, list files) -> samples;
  decode:     reading and decoding the image files, per backend;
  transforms: crops, flips and normalisation (on the CPU or the device), MixUp/CutMix;
  loaders:    the backends (--data-backend pytorch, gpu, synthetic): samplers,
              DataLoaders and batches on the device.

The names the rest of the trainer, the benchmarks and the tests use are re-exported here.
"""

from resnet50_trainer.data.decode import ImageSamples
from resnet50_trainer.data.layouts import DatasetIndex, check_data_path, discover
from resnet50_trainer.data.loaders import BACKENDS, Loaders, ShardSampler, build_loaders
from resnet50_trainer.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_batch_mixer,
    train_transform,
    val_transform,
)

__all__ = [
    "BACKENDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetIndex",
    "ImageSamples",
    "Loaders",
    "ShardSampler",
    "build_batch_mixer",
    "build_loaders",
    "check_data_path",
    "discover",
    "train_transform",
    "val_transform",
]
