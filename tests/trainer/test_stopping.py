"""SIGTERM (a drain, an eviction, a preemption) and periodic mid-epoch checkpoints: the run
stops at a step with its state saved and resumes there with the result of a run that never
stopped. Real trainings: the CLI in subprocesses, real JPEGs, real gloo process groups,
DataLoader workers, and random draws both per sample (TrivialAugment, erasing) and per
step (MixUp/CutMix)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from jpeg_datasets import make_folder_dataset

from devcluster.controlplane import free_port
from resnet50_trainer import checkpoint, contract

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# 2 classes x 12 images, 2 processes x 2 images: 6 steps an epoch; every step reports.
RANDOM = ["--model", "resnet18", "--train-crop-size", "32", "--val-resize-size", "36",
          "--val-crop-size", "32", "--device", "cpu", "--print-freq", "1", "-b", "2",
          "--epochs", "2", "-j", "2", "--auto-augment", "ta_wide", "--random-erase", "0.5",
          "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0", "--lr", "0.01"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("stopping") / "data", classes=2,
                               train_per_class=12, val_per_class=2)


def cmd(data: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "resnet50_trainer", *RANDOM, "--data-path", str(data),
            "--output-dir", str(out), *args]


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 300) -> None:
    """Read the process's log until `marker` (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if marker in line:
            return
        assert time.monotonic() < deadline, f"no {marker!r} in time"
    raise AssertionError(f"the run ended without logging {marker!r}")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> Path:
    """The uninterrupted run every stopped one must end like."""
    out = tmp_path_factory.mktemp("straight")
    proc = subprocess.run(cmd(data, out, "--nproc-per-node", "2"), capture_output=True,
                          text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return out


def test_sigterm_to_one_node_stops_both_at_one_step_and_the_resumed_run_ends_the_same(
        data, tmp_path, straight):
    """A drain of one node of two: its launcher gets SIGTERM, the other node none. Both stop
    after the same step, rank 0 (on the other node) saves it, both exit 143; started again,
    the pair finishes with the weights of the run that never stopped."""
    out = tmp_path / "out"

    def nodes(port: str) -> list[subprocess.Popen]:
        return [subprocess.Popen(
            cmd(data, out, "--nnodes", "2", "--node-rank", str(rank), "--master-addr",
                "127.0.0.1", "--master-port", port),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
            start_new_session=True) for rank in (0, 1)]

    master, drained = nodes(str(free_port()))
    wait_for(master, "Epoch [2/2] [2/6]")
    drained.send_signal(signal.SIGTERM)
    master_out, master_err = master.communicate(timeout=300)
    _, drained_err = drained.communicate(timeout=300)
    assert (master.returncode, drained.returncode) == (contract.EXIT_STOPPED,) * 2, master_err
    assert "Traceback" not in master_err + drained_err
    (line,) = [ln for ln in master_err.splitlines() if ln.startswith("resnet50-train: ")]
    state = checkpoint.load(out / checkpoint.MID_EPOCH_NAME, checkpoint.RESUME_KEYS)
    steps = state["totals"]["epoch_steps"]
    assert 2 <= steps < 6 and state["step"] == 6 + steps
    assert line == (f"resnet50-train: stopped by another rank's signal at step {steps} of "
                    f"epoch 2; it resumes there from {out / checkpoint.MID_EPOCH_NAME}")
    assert f"stopped by SIGTERM at step {steps} of epoch 2" in drained_err

    resumed = nodes(str(free_port()))
    (resumed_out, resumed_err), _ = (n.communicate(timeout=600) for n in resumed)
    assert [n.returncode for n in resumed] == [0, 0], resumed_err
    assert f"step {6 + steps}, {steps} steps of epoch 2)" in resumed_out
    assert "Epoch [2/2] [1/6]" not in resumed_out
    assert not (out / checkpoint.MID_EPOCH_NAME).exists()  # the epoch's own checkpoint is newer
    assert_same_weights(out / "checkpoint_epoch0002.pt", straight / "checkpoint_epoch0002.pt")
    epoch = [r for r in map(eval_json, (out / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "epoch"]
    straight_epoch = [r for r in map(eval_json, (straight / "metrics.jsonl").read_text()
                                     .splitlines()) if r["kind"] == "epoch"]
    assert [r["loss"] for r in epoch] == [r["loss"] for r in straight_epoch]
    assert [r["acc1"] for r in epoch] == [r["acc1"] for r in straight_epoch]


def eval_json(line: str) -> dict:
    import json

    return json.loads(line)


def test_periodic_mid_epoch_checkpoints_survive_a_kill(data, tmp_path):
    """--checkpoint-interval-minutes: a SIGKILL (no chance to save) mid-epoch loses only the
    steps since the last mid-epoch checkpoint; the resumed run ends as a straight one. One
    process (torchrun's workers would outlive a kill of the launcher's process group)."""
    straight, out = tmp_path / "straight", tmp_path / "out"
    one = ["-b", "4", "--epochs", "1"]
    assert subprocess.run(cmd(data, straight, *one), capture_output=True, timeout=600,
                          env=ENV).returncode == 0
    args = [*one, "--checkpoint-interval-minutes", "0.0001"]
    proc = subprocess.Popen(cmd(data, out, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV,
                            start_new_session=True)
    wait_for(proc, f"Saved {out / checkpoint.MID_EPOCH_NAME} (step 3 of epoch 1)")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    saved = checkpoint.load(out / checkpoint.MID_EPOCH_NAME, checkpoint.RESUME_KEYS)
    assert 3 <= saved["totals"]["epoch_steps"] < 6

    resumed = subprocess.run(cmd(data, out, *args), capture_output=True, text=True,
                             timeout=600, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed from {out / checkpoint.MID_EPOCH_NAME}" in resumed.stdout
    assert "Epoch [1/1] [1/6]" not in resumed.stdout
    assert_same_weights(out / "checkpoint_epoch0001.pt", straight / "checkpoint_epoch0001.pt")


def test_sigterm_to_a_single_process_saves_and_exits_143(data, tmp_path):
    """One process, no torchrun: the SIGTERM reaches the trainer itself."""
    out = tmp_path / "out"
    proc = subprocess.Popen(cmd(data, out, "-b", "4"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(proc, "Epoch [1/2] [1/6]")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == contract.EXIT_STOPPED
    (line,) = err.splitlines()
    assert line.startswith("resnet50-train: stopped by SIGTERM at step ")
    assert checkpoint.load(out / checkpoint.MID_EPOCH_NAME)["step"] >= 1


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def namespace_pid_1(outer: int) -> int:
    """The host PID of the first process in the PID namespace `outer` (unshare) made."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{outer}/task/{outer}/children").read_text().split():
            return int(child)
        time.sleep(0.05)
    raise AssertionError("unshare started no process")


@pytest.mark.skipif(sys.platform != "linux", reason="PID namespaces are Linux's")
def test_sigterm_ends_a_starting_trainer_that_is_the_first_process_of_its_pid_namespace(
        data, tmp_path):
    # A container's entrypoint is PID 1, which the kernel gives no default action for
    # SIGTERM: without its own handler a trainer deleted while starting (importing torch)
    # would wait for the grace period's SIGKILL.
    unshare = ["unshare", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    if subprocess.run([*unshare, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare cannot make a PID namespace here")
    outer = subprocess.Popen([*unshare, *cmd(data, tmp_path / "out")], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        trainer = namespace_pid_1(outer.pid)
        deadline = time.monotonic() + 60
        while not catches_sigterm(trainer):
            assert time.monotonic() < deadline, "the trainer never handled SIGTERM"
            time.sleep(0.01)
        os.kill(trainer, signal.SIGTERM)
        assert outer.wait(timeout=30) == contract.EXIT_STOPPED
    finally:
        outer.kill()
        log = outer.communicate()[0]
    # Stopped while starting, before any step: nothing to save (the training's own handler,
    # installed once it starts, would have saved the step it reached).
    assert not list((tmp_path / "out").glob("*.pt")), log
