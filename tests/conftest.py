"""Shared fixtures: tiny datasets of real JPEG files in both layouts of --data-path."""

from __future__ import annotations

from pathlib import Path

import pytest
from jpeg_datasets import make_folder_dataset


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("imagenet-folder"))


@pytest.fixture(scope="session")
def odd_val_dataset(tmp_path_factory) -> Path:
    """7 validation images: not divisible by 2 ranks."""
    root = make_folder_dataset(tmp_path_factory.mktemp("imagenet-odd"), classes=1,
                               train_per_class=8, val_per_class=7)
    return root
