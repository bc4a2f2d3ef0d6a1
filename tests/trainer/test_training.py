"""Real training runs: the CLI in subprocesses, real JPEGs, real gloo process groups."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from jpeg_datasets import make_folder_dataset, write_lists

from resnet50_trainer import checkpoint
from resnet50_trainer.progress import read_metrics

pytestmark = pytest.mark.slow
TINY = ["--train-crop-size", "32", "--val-resize-size", "36", "--val-crop-size", "32",
        "--device", "cpu", "-j", "0", "--print-freq", "1"]
RESULT_LINE = re.compile(r"^.*Acc@1=\d+\.\d\d,FPS=\d+,Time=\w+,BatchSize=\d+$", re.M)


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "resnet50_trainer", *TINY, *args]


# Unbuffered, so that log markers arrive while the trainer runs.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def epochs_of(output_dir: Path) -> list[int]:
    return [r["epoch"] for r in read_metrics(output_dir) if r["kind"] == "epoch"]


def assert_all_checkpoints_load(output_dir: Path) -> None:
    paths = checkpoint.epoch_checkpoints(output_dir) + [output_dir / checkpoint.BEST_NAME]
    for path in paths:
        checkpoint.load(path)


@pytest.mark.parametrize("layout", ["folder", "list"])
def test_single_process_trains_evaluates_checkpoints_and_reports(tmp_path, layout):
    data = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=4, val_per_class=3)
    if layout == "list":
        write_lists(data, with_split_prefix=layout == "list")
    out = tmp_path / "out"
    proc = run("--data-path", str(data), "--epochs", "2", "-b", "4", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert RESULT_LINE.search(proc.stdout) and "BatchSize=4" in proc.stdout
    assert re.search(r"Epoch \[1/2\] \[1/3\]  loss \d+\.\d+  lr 0\.00156  img/s [\d.]+  data "
                     r"[\d.]+s  eta \d:\d\d:\d\d", proc.stdout)
    records = read_metrics(out)
    assert [r["kind"] for r in records] == ["start", "epoch", "epoch", "result"]
    assert all(r["val_images"] == 9 for r in records if r["kind"] == "epoch")
    assert {p.name for p in out.glob("*.pt")} >= {"checkpoint_epoch0001.pt",
                                                   "checkpoint_epoch0002.pt", "best.pt"}
    assert_all_checkpoints_load(out)


def test_loss_goes_down_on_learnable_data(tmp_path):
    data = make_folder_dataset(tmp_path / "data", classes=4, train_per_class=8, val_per_class=1)
    out = tmp_path / "out"
    # A gentle, decaying LR: at batch 8 ResNet50's batch norm makes 0.01 and more diverge.
    proc = run("--data-path", str(data), "--epochs", "6", "-b", "8", "--lr", "0.002",
               "--lr-scheduler", "cosine", "--lr-warmup-epochs", "1", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    losses = [r["loss"] for r in read_metrics(out) if r["kind"] == "epoch"]
    assert losses[-1] < 0.5 * losses[0], losses


def test_resume_at_an_epoch_boundary_matches_an_uninterrupted_run(tmp_path):
    data = make_folder_dataset(tmp_path / "data", classes=2, train_per_class=4, val_per_class=1)
    common = ["--data-path", str(data), "-b", "4", "--lr-scheduler", "cosine", "--epochs", "2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run(*common, "--output-dir", str(straight)).returncode == 0
    first = run(*common, "--output-dir", str(split))
    assert first.returncode == 0
    (split / "checkpoint_epoch0002.pt").unlink()  # as if killed during epoch 2
    second = run(*common, "--output-dir", str(split))
    assert second.returncode == 0, second.stderr
    assert "Resumed from" in second.stdout and "(epoch 1 done, step 2)" in second.stdout
    a = checkpoint.load(straight / "checkpoint_epoch0002.pt")
    b = checkpoint.load(split / "checkpoint_epoch0002.pt")
    assert a["step"] == b["step"] == 4
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key


def test_two_processes_with_gloo_evaluate_every_image_exactly_once(odd_val_dataset, tmp_path):
    out = tmp_path / "out"
    proc = run("--data-path", str(odd_val_dataset), "--nproc-per-node", "2", "--epochs", "1",
               "-b", "2", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 processes x 2 images, 2 steps per epoch" in proc.stdout
    (epoch,) = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert epoch["val_images"] == 7 and epoch["images_per_second"] > 0
    assert RESULT_LINE.search(proc.stdout)


def test_sigkill_mid_epoch_then_restart_resumes_from_the_last_checkpoint(tmp_path):
    data = make_folder_dataset(tmp_path / "data", classes=2, train_per_class=12, val_per_class=1)
    out = tmp_path / "out"
    args = ["--data-path", str(data), "--epochs", "3", "-b", "2", "--output-dir", str(out)]
    proc = subprocess.Popen(train_cmd(*args), stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env=ENV)
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # wait for a log marker, never a bare sleep
        if "Epoch [2/3] [ 3/12]" in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert epochs_of(out) == [1]
    assert_all_checkpoints_load(out)

    resumed = run(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoint_epoch0001.pt (epoch 1 done, step 12)" in resumed.stdout
    assert "Epoch [1/3]" not in resumed.stdout
    assert epochs_of(out) == [1, 2, 3]
    assert_all_checkpoints_load(out)


def test_a_finished_job_started_again_reports_without_training(tmp_path, folder_dataset):
    out = tmp_path / "out"
    args = ["--data-path", str(folder_dataset), "--epochs", "1", "-b", "8",
            "--output-dir", str(out)]
    assert run(*args).returncode == 0
    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert "Epoch [1/1]" not in again.stdout and RESULT_LINE.search(again.stdout)
    assert epochs_of(out) == [1]


def test_test_only_evaluates_a_checkpoint(tmp_path, folder_dataset):
    out = tmp_path / "out"
    base = ["--data-path", str(folder_dataset), "-b", "8", "--output-dir", str(out)]
    missing = run(*base, "--test-only")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"resnet50-train: error: --test-only needs a checkpoint: none in {out} and no --resume")
    assert run(*base, "--epochs", "1").returncode == 0
    tested = run(*base, "--test-only")
    assert tested.returncode == 0, tested.stderr
    assert re.search(r"Test: Acc@1 \d+\.\d+  Acc@5 100\.000 .*\(9 images\)", tested.stdout)
    assert read_metrics(out)[-1]["kind"] == "test"


# ------------------------------------------------------------------ bad input


def test_missing_data_path_is_one_line_and_exit_2(tmp_path):
    proc = run("--data-path", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr == f"resnet50-train: error: data path {tmp_path}/nowhere does not exist\n"


def test_missing_data_path_under_the_launcher_is_one_line_and_exit_2(tmp_path):
    proc = run("--data-path", str(tmp_path / "nowhere"), "--nproc-per-node", "2")
    assert proc.returncode == 2
    assert proc.stderr == f"resnet50-train: error: data path {tmp_path}/nowhere does not exist\n"


def test_a_worker_configuration_error_keeps_exit_2_through_the_launcher(tmp_path):
    data = make_folder_dataset(tmp_path / "data", classes=2, train_per_class=2, val_per_class=1)
    (data / "val" / "n01440765").rename(data / "val" / "n05555555")
    proc = run("--data-path", str(data), "--nproc-per-node", "2", "-b", "2",
               "--output-dir", str(tmp_path / "o"))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "resnet50-train: error" in line]
    assert errors == ["resnet50-train: error: class folders differ between "
                      f"{data / 'train'} and {data / 'val'}: only in train: n01440765; "
                      "only in val: n05555555"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("workers", ["0", "1"])
def test_unreadable_image_names_the_file_and_exits_3(tmp_path, workers):
    data = make_folder_dataset(tmp_path / "data", classes=1, train_per_class=2, val_per_class=1)
    bad = data / "train" / "n01440764" / "n01440764_1.JPEG"
    bad.write_bytes(b"\xff\xd8 truncated")
    proc = run("--data-path", str(data), "-b", "2", "-j", workers, "--output-dir",
               str(tmp_path / "o"))
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"resnet50-train: error: cannot read image {bad}: ")
    assert len(proc.stderr.splitlines()) == 1


def test_incompatible_checkpoint_is_refused_and_left_intact(tmp_path, folder_dataset):
    out = tmp_path / "out"
    base = ["--data-path", str(folder_dataset), "-b", "8", "--output-dir", str(out)]
    assert run(*base, "--epochs", "1").returncode == 0
    before = (out / "checkpoint_epoch0001.pt").read_bytes()
    proc = run(*base, "--epochs", "2", "--num-classes", "5")
    assert proc.returncode == 2
    assert "was written by an incompatible configuration (num_classes: 3 in the checkpoint, " \
           "5 now)" in proc.stderr
    assert (out / "checkpoint_epoch0001.pt").read_bytes() == before


def test_every_optional_feature_trains_checkpoints_and_resumes(tmp_path):
    """amp (GradScaler), channels_last, EMA, mixup/cutmix, label smoothing, nesterov, warm-up
    into cosine, zero-init residual: one short run, then a resume that restores them."""
    out = tmp_path / "out"
    args = ["--synthetic", "--synthetic-train-size", "4", "--synthetic-val-size", "3", "-b", "2",
            "--num-classes", "10", "--amp", "--channels-last", "--model-ema",
            "--model-ema-steps", "1", "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0",
            "--label-smoothing", "0.1", "--nesterov", "--lr-scheduler", "cosine",
            "--lr-warmup-epochs", "0.5", "--norm-weight-decay", "0", "--zero-init-residual",
            "--output-dir", str(out)]
    first = run(*args, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    assert "Test (EMA): Acc@1" in first.stdout
    state = checkpoint.load(out / "checkpoint_epoch0001.pt")
    assert state["scaler"]["scale"] > 0 and state["ema"]["n_averaged"] >= 0
    second = run(*args, "--epochs", "2")
    assert second.returncode == 0, second.stderr
    assert "Resumed from" in second.stdout and epochs_of(out) == [1, 2]


def test_sync_bn_on_cpu_is_a_configuration_error(tmp_path):
    proc = run("--synthetic", "--synthetic-train-size", "4", "-b", "2", "--num-classes", "2",
               "--sync-bn", "--nproc-per-node", "2", "--output-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "resnet50-train: error: --sync-bn needs GPUs" in proc.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_rendezvous_through_the_master_address(tmp_path, folder_dataset):
    """The reference 16-card case in miniature: two launchers, one per 'node', on loopback."""
    out, port = tmp_path / "out", str(free_port())
    nodes = [
        subprocess.Popen(
            train_cmd("--data-path", str(folder_dataset), "--epochs", "1", "-b", "4",
                      "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
                      "--master-port", port, "--output-dir", str(out)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for rank in (0, 1)
    ]
    (master_out, master_err), _ = (n.communicate(timeout=300) for n in nodes)
    assert [n.returncode for n in nodes] == [0, 0], master_err
    assert "2 processes x 4 images, 3 steps per epoch" in master_out
    assert RESULT_LINE.search(master_out)


def test_sigterm_to_the_launcher_stops_every_worker_and_exits_143(tmp_path):
    """What a pod deletion does: SIGTERM to the container's main process."""
    proc = subprocess.Popen(
        train_cmd("--synthetic", "--synthetic-train-size", "4000", "-b", "2", "--num-classes",
                  "2", "--nproc-per-node", "2", "--output-dir", str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    for line in proc.stdout:
        if "Epoch [1/90]" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "resnet50-train: stopped by SIGTERM" in err and "Traceback" not in err


def test_resume_starts_an_empty_job_and_then_the_job_continues_its_own(tmp_path, folder_dataset):
    base = ["--data-path", str(folder_dataset), "-b", "8"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(*base, "--epochs", "1", "--output-dir", str(first)).returncode == 0
    args = [*base, "--epochs", "2", "--output-dir", str(second),
            "--resume", str(first / "checkpoint_epoch0001.pt")]
    started = run(*args)
    assert started.returncode == 0, started.stderr
    assert f"Resumed from {first}/checkpoint_epoch0001.pt" in started.stdout
    again = run(*args)
    assert f"Resumed from {second}/checkpoint_epoch0002.pt" in again.stdout


@pytest.mark.parametrize(("preset", "extra"), [
    ("torchvision-v1", []),
    ("torchvision-v2", []),  # TrivialAugment, random erasing, MixUp/CutMix, EMA, RA sampler
    ("paddleclas-fp32-4cards", []),
    ("ffcv-16epochs", ["--train-crop-size", "64", "--progressive-resize-from", "32",
                       "--progressive-resize-ramp", "0", "0.5"]),
])
def test_every_recipe_preset_trains_on_the_cpu(tmp_path, preset, extra):
    """A smoke run of each recipe's whole pipeline: one process, 32-px crops, 2 epochs."""
    data = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=8, val_per_class=2)
    out = tmp_path / "out"
    proc = run("--preset", preset, "--data-path", str(data), "--nproc-per-node", "1",
               "--precision", "fp32", "--epochs", "2", "--lr-warmup-epochs", "0.5", "-b", "4",
               "--output-dir", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    assert epochs_of(out) == [1, 2]
    assert RESULT_LINE.search(proc.stdout)
