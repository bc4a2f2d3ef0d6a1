"""benchmarks/throughput.py on the CPU: the report's structure, the JPEG set, the data rows,
and the guarantee behind every trainer row: its step keeps the plain loop's loss curve.

No test here asserts a speed: figures on a shared CPU say nothing about a GPU.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import throughput  # noqa: E402

from resnet50_trainer.engine import train_step  # noqa: E402

CPU = torch.device("cpu")
TINY = ["--device", "cpu", "--batch-size", "2", "--image-size", "32", "--warmup", "2",
        "--steps", "2", "--windows", "2", "--workers", "0", "--model", "resnet18"]


def run_cli(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "report.json"
    returned = throughput.main([*TINY, *args, "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["rows"] == returned["rows"]
    return written


def assert_measured(row: dict) -> None:
    assert row["error"] is None, row
    assert row["images_per_second"] > 0
    assert len(row["window_images_per_second"]) == 2
    assert all(rate > 0 for rate in row["window_images_per_second"])
    assert row["peak_memory_bytes"] is None  # CPU


def test_synthetic_report_has_device_versions_settings_and_ratios(tmp_path):
    report = run_cli(tmp_path, "--modes", "fp32", "fp32+cl")
    assert report["device"]["type"] == "cpu" and report["device"]["name"]
    assert set(report["versions"]) == {"python", "torch", "torchvision", "cuda", "cudnn"}
    assert report["versions"]["torch"] == torch.__version__
    assert report["command"].startswith("python benchmarks/throughput.py --device cpu")
    settings = report["settings"]
    assert (settings["batch_size"], settings["image_size"], settings["warmup"],
            settings["steps"], settings["windows"]) == (2, 32, 2, 2, 2)
    assert settings["modes"] == ["fp32", "fp32+cl"] and settings["data"] == ["synthetic"]
    rows = report["rows"]
    assert [(r["loop"], r["data"], r["backend"], r["mode"]) for r in rows] == [
        ("baseline", "synthetic", "dataloader", "fp32"),
        ("trainer", "synthetic", "synthetic", "fp32"),
        ("trainer", "synthetic", "synthetic", "fp32+cl"),
    ]
    for row in rows:
        assert_measured(row)
        assert row["ratio_to_baseline"] == pytest.approx(
            row["images_per_second"] / rows[0]["images_per_second"])
    assert rows[0]["ratio_to_baseline"] == pytest.approx(1.0)


def test_jpeg_rows_measure_both_backends_alone_and_end_to_end(tmp_path):
    jpegs = tmp_path / "jpegs"
    report = run_cli(tmp_path, "--data", "pytorch", "gpu", "--make-jpegs", "4",
                     "--jpeg-dir", str(jpegs))
    assert report["jpegs"]["train_images"] == 4 and report["jpegs"]["mean_kilobytes"] > 50
    rows = report["rows"]
    assert [(r["loop"], r["backend"], r["mode"]) for r in rows] == [
        ("baseline", "dataloader", "fp32"),
        ("loader", "pytorch", None),
        ("trainer", "pytorch", "fp32"),
        ("loader", "gpu", None),
        ("trainer", "gpu", "fp32"),
    ]
    for row in rows:
        assert row["data"] == "jpeg"
        assert_measured(row)
        assert row["ratio_to_baseline"] == pytest.approx(
            row["images_per_second"] / rows[0]["images_per_second"])
        assert row["share_of_synthetic"] is None  # no synthetic rows in this run


def test_a_mode_that_fails_is_an_error_row(tmp_path):
    report = run_cli(tmp_path, "--modes", "fp32", "--model", "no_such_model")
    assert [r["loop"] for r in report["rows"]] == ["baseline", "trainer"]
    for row in report["rows"]:
        assert row["images_per_second"] is None and row["ratio_to_baseline"] is None
        assert "no_such_model" in row["error"]


@pytest.mark.slow
def test_compiled_mode_runs(tmp_path):
    """torch.compile on 2 CPU cores: about a minute for resnet18, several for resnet50."""
    report = run_cli(tmp_path, "--modes", "fp32+compile")
    assert report["rows"][1]["mode"] == "fp32+compile"
    assert_measured(report["rows"][1])


def test_modes_cover_every_combination_and_parse_back():
    names = [m.name for m in throughput.ALL_MODES]
    assert len(set(names)) == 12 and {"fp32", "amp+cl", "bf16+cl+compile"} <= set(names)
    assert all(throughput.Mode.parse(n).name == n for n in names)
    with pytest.raises(ValueError, match="unknown mode 'fp16'"):
        throughput.Mode.parse("fp16")


@pytest.mark.parametrize(("name", "compile_mode", "foreach"), [
    ("amp+cl+compile=reduce-overhead", "reduce-overhead", False),
    ("bf16+compile=max-autotune-no-cudagraphs+foreach", "max-autotune-no-cudagraphs", True),
    ("fp32+foreach", "default", True),
])
def test_compile_modes_and_the_unfused_optimizer_parse_back(name, compile_mode, foreach):
    mode = throughput.Mode.parse(name)
    assert (mode.compile_mode, mode.foreach, mode.name) == (compile_mode, foreach, name)
    cfg = throughput.trainer_config(settings(), mode, "synthetic")
    assert cfg.compile_mode == compile_mode


@pytest.mark.parametrize("name", ["amp+compile=fast", "amp+compile+compile", "amp+fused"])
def test_unknown_compile_modes_and_flags_are_refused(name):
    with pytest.raises(ValueError, match=f"unknown mode '{re.escape(name)}'"):
        throughput.Mode.parse(name)


def test_command_line_runs_as_a_script_and_rejects_jpeg_data_without_a_set():
    script = str(BENCHMARKS / "throughput.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--data-modes" in shown.stdout
    refused = subprocess.run([sys.executable, script, "--data", "gpu"], capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "needs --jpeg-dir DIR or --make-jpegs N" in refused.stderr


# ---------------------------------------------------------------- the JPEG set


def test_jpeg_set_holds_real_jpegs_of_the_requested_sizes(tmp_path):
    sizes = [(64, 48), (40, 56)]
    paths = throughput.make_jpeg_set(tmp_path / "a", 6, sizes=sizes, weights=[1, 1], classes=3)
    assert len(paths) == 6 + 3
    assert len(list((tmp_path / "a" / "train").glob("n*/*.JPEG"))) == 6
    assert len(list((tmp_path / "a" / "val").glob("n*/*.JPEG"))) == 3
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size in sizes
            img.load()
    # The same arguments give the same files; files already there are kept.
    again = throughput.make_jpeg_set(tmp_path / "b", 6, sizes=sizes, weights=[1, 1], classes=3)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    throughput.make_jpeg_set(tmp_path / "a", 6, sizes=sizes, weights=[1, 1], classes=3)
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_default_jpegs_are_imagenet_like(tmp_path):
    paths = throughput.make_jpeg_set(tmp_path, 4, classes=2)
    for path in paths:
        with Image.open(path) as img:
            assert img.size in throughput.IMAGENET_LIKE_SIZES
        assert 60_000 < path.stat().st_size < 200_000  # ~110 KB at 500x375


# ---------------------------------------------------------------- the loss curve

STEPS = 6


def learnable_batches(batch: int = 32, size: int = 32, classes: int = 4):
    """Images whose mean colour gives the class, so a few steps lower the loss smoothly."""
    generator = torch.Generator().manual_seed(1)
    means = torch.randn(classes, 3, 1, 1, generator=generator)
    batches = []
    for _ in range(STEPS):
        labels = torch.randint(classes, (batch,), generator=generator)
        images = means[labels] + torch.randn(batch, 3, size, size, generator=generator)
        batches.append((images, labels))
    return batches


def settings(seed: int = 0) -> throughput.Settings:
    return throughput.Settings(device=CPU, batch_size=32, image_size=32, model="resnet18",
                               num_classes=4, lr=0.003, seed=seed)


def plain_curve(batches, seed: int) -> list[float]:
    loop = throughput.build_plain_loop(settings(seed))
    return [throughput.plain_step(loop, images, labels).item() for images, labels in batches]


@pytest.fixture(scope="module")
def curves():
    batches = learnable_batches()
    return batches, plain_curve(batches, seed=0), plain_curve(batches, seed=1)


def trainer_curve(batches, mode: str) -> list[float]:
    ctx = throughput.build_trainer_context(settings(), throughput.Mode.parse(mode), STEPS)
    return [train_step(ctx, images, labels, i).item()
            for i, (images, labels) in enumerate(batches)]


def test_trainer_step_in_fp32_repeats_the_plain_loop(curves):
    batches, plain, _ = curves
    assert plain[-1] < 0.7 * plain[0]  # the curve goes down: the comparison means something
    assert trainer_curve(batches, "fp32") == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("mode", ["fp32+cl", "bf16", "bf16+cl"])
def test_trainer_step_keeps_the_loss_curve_within_seed_noise(curves, mode):
    """channels_last and autocast round differently; the curve must stay closer to the
    plain loop's than the plain loop on another seed is."""
    batches, plain, other_seed = curves
    noise = max(abs(a - b) for a, b in zip(plain, other_seed, strict=True))
    trainer = trainer_curve(batches, mode)
    deviation = max(abs(a - b) for a, b in zip(trainer, plain, strict=True))
    assert deviation < noise, (trainer, plain, other_seed)
    assert trainer[-1] < 0.7 * trainer[0]
