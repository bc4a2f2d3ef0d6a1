"""benchmarks/decode.py on this CPU: the crop and draft arithmetic, and each candidate that
the project's environment holds runs in its pinned child and reports a rate per core. The
others are reported as not installed. No test asserts a speed."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from jpeg_datasets import make_folder_dataset

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import decode  # noqa: E402
from throughput import IMAGENET_LIKE_SIZES  # noqa: E402

TINY = decode.Settings(crop=32, batch=4, warmup=1, windows=2, images_per_window=8,
                       timeout=300)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[Path]:
    root = make_folder_dataset(tmp_path_factory.mktemp("decode") / "data", classes=2,
                               train_per_class=4, val_per_class=1)
    return sorted((root / "train").rglob("*.JPEG"))


@pytest.mark.parametrize(("crop", "expected"), [
    ((500, 375), 1), ((448, 448), 2), ((447, 900), 1), ((1800, 1792), 8), ((900, 1000), 4)])
def test_draft_reduces_only_while_the_crop_stays_at_least_the_output(crop, expected):
    assert decode.draft_reduction(*crop, out=224) == expected


def test_crop_boxes_lie_inside_the_image_within_torchvisions_scale_and_ratio():
    rng = random.Random(0)
    for width, height in IMAGENET_LIKE_SIZES:
        for _ in range(200):
            top, left, h, w = decode.crop_params(width, height, rng)
            assert 0 <= top <= height - h and 0 <= left <= width - w
            assert 0.08 * width * height * 0.99 <= w * h <= width * height


@pytest.mark.parametrize("name", ["pillow", "torchvision-cpu"])
def test_a_candidate_runs_pinned_and_reports_images_per_second(jpegs, name):
    result = decode.run_candidate(name, jpegs, TINY)
    assert result["status"] == "ok", result
    assert result["images_per_second_per_core"] > 0
    assert len(result["window_images_per_second"]) == TINY.windows
    decode.project(result, node_cores=16, gpus=8, gpu_rate=4800)
    assert result["cores_per_gpu"] == pytest.approx(4800 / result["images_per_second_per_core"])


def test_a_library_that_is_not_installed_is_a_row_that_says_so(jpegs):
    # The project's environment has no DALI (benchmarks/decode.py's docstring installs it
    # into another one).
    result = decode.run_candidate("dali-cpu", jpegs, TINY)
    assert result["status"] == "not installed" and "dali" in result["error"].lower()
    table = decode.format_table([result], node_cores=16, gpus=8, gpu_rate=4800, crop=32)
    assert "| dali-cpu |" in table and "not installed" in table
