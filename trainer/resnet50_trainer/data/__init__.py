"""Datasets, transforms and loaders: see data.loaders (split into modules next)."""

from resnet50_trainer.data.loaders import *  # noqa: F403
