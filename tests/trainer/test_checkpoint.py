import os
import re
import subprocess
import sys
import zipfile

import pytest
import torch

from resnet50_trainer import checkpoint
from resnet50_trainer.errors import ConfigError


def state(epoch, **compat):
    return {"format": checkpoint.FORMAT_VERSION, "epoch": epoch, "step": 10 * epoch,
            "model": {"w": torch.full((3,), float(epoch))}, "optimizer": {},
            "compat": {"model": "resnet50", **compat}}


def test_save_is_atomic_and_leaves_no_temporary(tmp_path):
    path = checkpoint.epoch_path(tmp_path, 3)
    checkpoint.save_atomic(state(3), path)
    assert path.name == "checkpoint_epoch0003.pt"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert checkpoint.load(path)["epoch"] == 3


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = checkpoint.epoch_path(tmp_path, 1)
    checkpoint.save_atomic(state(1), path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic(state(2), path)
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_newest_valid_skips_truncated_and_foreign_files(tmp_path, caplog):
    for epoch in (1, 2, 3, 4):
        checkpoint.save_atomic(state(epoch), checkpoint.epoch_path(tmp_path, epoch))
    newest = checkpoint.epoch_path(tmp_path, 4)
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a lying disk
    torch.save({"something": "else"}, checkpoint.epoch_path(tmp_path, 3))
    path, loaded = checkpoint.newest_valid(tmp_path)
    assert path == checkpoint.epoch_path(tmp_path, 2) and loaded["epoch"] == 2
    assert "skipping unreadable checkpoint" in caplog.text and "0004" in caplog.text


def test_epochs_sort_numerically_and_prune_keeps_the_last(tmp_path):
    for epoch in (9, 10, 11, 100):
        checkpoint.save_atomic(state(epoch), checkpoint.epoch_path(tmp_path, epoch))
    (tmp_path / checkpoint.BEST_NAME).write_bytes(b"best")
    checkpoint.prune(tmp_path, keep=2)
    assert [p.name for p in checkpoint.epoch_checkpoints(tmp_path)] == [
        "checkpoint_epoch0100.pt", "checkpoint_epoch0011.pt"]
    assert (tmp_path / checkpoint.BEST_NAME).exists()


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".checkpoint_epoch0002.pt.tmp123").write_bytes(b"half")
    keep = tmp_path / "notes.txt"
    keep.write_text("x")
    checkpoint.remove_stale_temporaries(tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_incompatible_checkpoint_is_refused_with_the_differences(tmp_path):
    saved = state(1, num_classes=10, global_batch_size=256)
    with pytest.raises(ConfigError, match=r"incompatible configuration \(num_classes: 10 in the "
                                          r"checkpoint, 5 now\); use another --output-dir"):
        checkpoint.check_compatible(saved, {"model": "resnet50", "num_classes": 5,
                                            "global_batch_size": 256}, tmp_path / "c.pt")
    checkpoint.check_compatible(saved, {"model": "resnet50", "num_classes": 10,
                                        "global_batch_size": 256}, tmp_path / "c.pt")


def test_an_output_dir_that_cannot_be_written_is_a_configuration_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"--output-dir .*a-file/run is not writable: Not a "
                                          r"directory \(running as uid \d+\)"):
        checkpoint.check_writable(blocker / "run")
    checkpoint.check_writable(tmp_path / "new" / "run")
    assert list((tmp_path / "new" / "run").iterdir()) == []


def with_best(epoch, best_acc1, best_epoch):
    return {**state(epoch), "totals": {"best_acc1": best_acc1, "best_epoch": best_epoch}}


def test_a_lost_best_pt_is_recovered_from_the_checkpoint_of_the_best_epoch(tmp_path, caplog):
    best = tmp_path / checkpoint.BEST_NAME
    checkpoint.recover_best(tmp_path, with_best(3, 50.0, 3))  # killed before best.pt was written
    assert checkpoint.load(best)["epoch"] == 3
    assert caplog.messages == [f"recovered {best} from the checkpoint of epoch 3 (Acc@1 50.000)"]
    caplog.clear()
    checkpoint.recover_best(tmp_path, with_best(4, 50.0, 3))  # best.pt holds it: untouched
    assert checkpoint.load(best)["epoch"] == 3 and caplog.messages == []


def test_a_best_pt_that_cannot_be_recovered_is_one_warning(tmp_path, caplog):
    best = tmp_path / checkpoint.BEST_NAME
    checkpoint.save_atomic(with_best(1, 40.0, 1), best)
    checkpoint.recover_best(tmp_path, with_best(3, 50.0, 2))  # epoch 2's weights are gone
    assert checkpoint.load(best)["epoch"] == 1
    assert caplog.messages == [
        f"{best} does not hold the best Acc@1 so far, 50.000 (epoch 2), and cannot be "
        "recovered: it is written again at the next higher Acc@1"]


# ------------------------------------------------------------------ unreadable files


def flip_a_byte_of(archive_path, member, header=False):
    """The archive's bytes with the first byte of a member's contents (or header) changed."""
    data = bytearray(archive_path.read_bytes())
    with zipfile.ZipFile(archive_path) as archive:
        (info,) = [i for i in archive.infolist() if i.filename.endswith("/" + member)]
    start = info.header_offset  # the local header: 30 bytes, the name, an extra field
    name_size = int.from_bytes(data[start + 26:start + 28], "little")
    extra_size = int.from_bytes(data[start + 28:start + 30], "little")
    data[start if header else start + 30 + name_size + extra_size] ^= 0xFF
    return bytes(data)


def test_each_kind_of_unreadable_file_is_named_with_its_reason(tmp_path):
    good = tmp_path / "good.pt"
    checkpoint.save_atomic(state(1), good)
    cases = {
        "truncated.pt": (good.read_bytes()[:200], r"^a truncated zip archive$"),
        "cut-short.pt": (good.read_bytes()[:-10], r"^a truncated zip archive$"),
        "garbage.pt": (b"\x80\x02 not a checkpoint at all" * 10, r"^not a torch archive$"),
        "empty.pt": (b"", r"^an empty file$"),
        "bit-rot.pt": (flip_a_byte_of(good, "data/0"),
                       r"^a corrupt torch archive \(\S+/data/0 fails its CRC check\)$"),
        "bad-header.pt": (flip_a_byte_of(good, "data.pkl", header=True), r"^a corrupt "),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(checkpoint.Unreadable) as caught:
            checkpoint.load(tmp_path / name)
        assert caught.value.path == tmp_path / name
        assert re.match(reason, caught.value.reason), (name, caught.value.reason)
    torch.save({"something": "else"}, tmp_path / "foreign.pt")
    with pytest.raises(checkpoint.Unreadable, match=r"not a resnet50-train checkpoint \(no "
                                                     r"'compat', 'epoch', 'format'"):
        checkpoint.load(tmp_path / "foreign.pt")
    with pytest.raises(checkpoint.Unreadable, match=r"\(no 'ema', 'scaler', 'totals'\)"):
        checkpoint.load(good, checkpoint.RESUME_KEYS)  # a resume reads these too
    torch.save({**state(1), "format": 99}, tmp_path / "future.pt")
    with pytest.raises(checkpoint.Unreadable, match=r"format 99, this trainer reads 1"):
        checkpoint.load(tmp_path / "future.pt")


def test_an_unreadable_newest_checkpoint_is_kept_aside_and_the_one_before_resumed(tmp_path,
                                                                                  caplog):
    for epoch in (1, 2, 3):
        checkpoint.save_atomic(state(epoch), checkpoint.epoch_path(tmp_path, epoch))
    newest = checkpoint.epoch_path(tmp_path, 3)
    truncated = newest.read_bytes()[:300]
    newest.write_bytes(truncated)
    (tmp_path / "checkpoint_epoch0003.pt.unreadable").write_bytes(b"from an earlier failure")
    path, loaded = checkpoint.newest_valid(tmp_path)
    assert path == checkpoint.epoch_path(tmp_path, 2) and loaded["epoch"] == 2
    (warning,) = caplog.messages
    assert warning == (f"skipping unreadable checkpoint {newest}: a truncated zip archive; "
                       "kept as checkpoint_epoch0003.pt.unreadable2")
    # Kept byte for byte, out of the way of the epoch trained again and of pruning.
    assert (tmp_path / "checkpoint_epoch0003.pt.unreadable2").read_bytes() == truncated
    assert (tmp_path / "checkpoint_epoch0003.pt.unreadable").read_bytes() == b"from an " \
                                                                             b"earlier failure"
    checkpoint.save_atomic(state(3), newest)
    checkpoint.prune(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_epoch0003.pt", "checkpoint_epoch0003.pt.unreadable",
        "checkpoint_epoch0003.pt.unreadable2"]


def test_when_no_checkpoint_loads_resuming_stops_and_touches_nothing(tmp_path):
    checkpoint.epoch_path(tmp_path, 1).write_bytes(b"garbage")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError) as caught:
        checkpoint.newest_valid(tmp_path)
    assert str(caught.value) == (
        f"cannot resume: checkpoint {checkpoint.epoch_path(tmp_path, 1)} does not load (not a "
        f"torch archive) and there is no earlier one; move the checkpoint_epoch*.pt files out "
        f"of {tmp_path} to start afresh, or use another --output-dir")
    checkpoint.save_atomic(state(2), checkpoint.epoch_path(tmp_path, 2))
    checkpoint.epoch_path(tmp_path, 2).write_bytes(b"")
    checkpoint.epoch_path(tmp_path, 3).write_bytes(b"PK\x03\x04 cut")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match=r"checkpoint_epoch0003.pt does not load \(a truncated "
                                          r"zip archive\) and neither do the 2 earlier ones; "
                                          r"move"):
        checkpoint.newest_valid(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_incompatible_checkpoint_names_the_options_to_continue_it(tmp_path):
    saved = state(1, num_classes=10, global_batch_size=256, lr_scheduler="step",
                  model_ema=True)
    now = {"model": "resnet50", "num_classes": 10, "global_batch_size": 512,
           "lr_scheduler": "cosine", "model_ema": False}
    with pytest.raises(ConfigError) as caught:
        checkpoint.check_compatible(saved, now, tmp_path / "c.pt")
    assert str(caught.value) == (
        f"checkpoint {tmp_path / 'c.pt'} was written by an incompatible configuration "
        "(global_batch_size: 256 in the checkpoint, 512 now; lr_scheduler: 'step' in the "
        "checkpoint, 'cosine' now; model_ema: True in the checkpoint, False now); use another "
        "--output-dir to start afresh, or continue it with the checkpoint's "
        "--global-batch-size 256 --lr-scheduler step --model-ema")


# ------------------------------------------------------------------ resuming, end to end

TINY_RUN = ["--synthetic", "--synthetic-train-size", "2", "--synthetic-val-size", "2", "-b", "2",
            "--num-classes", "2", "--model", "resnet18", "--train-crop-size", "32",
            "--val-resize-size", "32", "--val-crop-size", "32", "--device", "cpu", "-j", "0"]


def train(output_dir, *args, before_main=""):
    code = f"{before_main}\nfrom resnet50_trainer.cli import main\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *TINY_RUN, "--output-dir", str(output_dir), *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def error_line(proc) -> str:
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    return line


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_resumes_from_the_one_before(tmp_path):
    out = tmp_path / "out"
    assert train(out, "--epochs", "2").returncode == 0
    newest = checkpoint.epoch_path(out, 2)
    truncated = newest.read_bytes()[:1000]
    newest.write_bytes(truncated)
    again = train(out, "--epochs", "2")
    assert again.returncode == 0, again.stderr
    assert (f"skipping unreadable checkpoint {newest}: a truncated zip archive; kept as "
            "checkpoint_epoch0002.pt.unreadable\n") in again.stdout
    assert f"Resumed from {checkpoint.epoch_path(out, 1)} (epoch 1 done" in again.stdout
    assert (out / "checkpoint_epoch0002.pt.unreadable").read_bytes() == truncated
    assert checkpoint.load(newest, checkpoint.RESUME_KEYS)["epoch"] == 2  # trained again


KILLED_AT_THE_EPOCH_CHECKPOINT = """
import os, signal
from resnet50_trainer import checkpoint
save_atomic = checkpoint.save_atomic
def save_or_die(state, path):
    if path.name.startswith("checkpoint_epoch"):
        os.kill(os.getpid(), signal.SIGKILL)
    save_atomic(state, path)
checkpoint.save_atomic = save_or_die
"""


@pytest.mark.slow
def test_a_kill_while_saving_the_best_epoch_keeps_its_best_pt(tmp_path):
    out = tmp_path / "out"
    killed = train(out, "--epochs", "1", before_main=KILLED_AT_THE_EPOCH_CHECKPOINT)
    assert killed.returncode == -9, killed.stderr
    assert checkpoint.epoch_checkpoints(out) == []
    best = checkpoint.load(out / checkpoint.BEST_NAME, checkpoint.RESUME_KEYS)
    assert best["epoch"] == 1 and best["totals"]["best_epoch"] == 1


@pytest.mark.slow
def test_a_resume_recovers_the_best_pt_that_an_earlier_run_lost(tmp_path):
    out = tmp_path / "out"
    assert train(out, "--epochs", "1").returncode == 0
    (out / checkpoint.BEST_NAME).unlink()  # what the old order lost to a kill between writes
    again = train(out, "--epochs", "1")
    assert again.returncode == 0, again.stderr
    assert f"recovered {out / checkpoint.BEST_NAME} from the checkpoint of epoch 1" in again.stdout
    assert checkpoint.load(out / checkpoint.BEST_NAME)["epoch"] == 1


@pytest.mark.slow
def test_a_garbage_only_checkpoint_is_a_configuration_error_and_stays(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    garbage = checkpoint.epoch_path(out, 3)
    garbage.write_bytes(b"these are not the weights you are looking for\n")
    proc = train(out, "--epochs", "4", "--resume", str(tmp_path / "unused.pt"))
    assert proc.returncode == 2
    assert error_line(proc) == (
        f"resnet50-train: error: cannot resume: checkpoint {garbage} does not load (not a torch "
        f"archive) and there is no earlier one; move the checkpoint_epoch*.pt files out of "
        f"{out} to start afresh, or use another --output-dir")
    assert sorted(p.name for p in out.iterdir()) == [garbage.name]  # nothing started afresh
    assert garbage.read_bytes() == b"these are not the weights you are looking for\n"


@pytest.mark.slow
def test_an_unreadable_resume_file_is_a_configuration_error(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    proc = train(tmp_path / "out", "--epochs", "1", "--resume", str(bad))
    assert proc.returncode == 2
    assert error_line(proc) == (
        f"resnet50-train: error: --resume {bad} does not load: a truncated zip archive; give "
        "another checkpoint, or none to start afresh")
    assert bad.read_bytes() == b"PK\x03\x04" + b"\0" * 100


@pytest.mark.slow
def test_a_checkpoint_of_another_configuration_names_the_option_and_both_values(tmp_path):
    out = tmp_path / "out"
    assert train(out, "--epochs", "1", "--norm-weight-decay", "0").returncode == 0
    before = checkpoint.epoch_path(out, 1).read_bytes()
    classes = train(out, "--epochs", "2", "--num-classes", "3", "--norm-weight-decay", "0")
    assert classes.returncode == 2
    assert error_line(classes) == (
        f"resnet50-train: error: checkpoint {checkpoint.epoch_path(out, 1)} was written by an "
        "incompatible configuration (num_classes: 2 in the checkpoint, 3 now); use another "
        "--output-dir to start afresh, or continue it with the checkpoint's --num-classes 2")
    # Not in compat, but the optimizer state fits only the same parameter groups.
    groups = train(out, "--epochs", "2")
    assert groups.returncode == 2
    assert error_line(groups) == (
        f"resnet50-train: error: checkpoint {checkpoint.epoch_path(out, 1)} groups the "
        "parameters for weight decay differently (--norm-weight-decay 0.0 in the checkpoint, "
        "unset now); give the checkpoint's values to continue it, or use another --output-dir")
    assert checkpoint.epoch_path(out, 1).read_bytes() == before
    assert train(out, "--epochs", "2", "--norm-weight-decay", "0").returncode == 0


@pytest.mark.slow
def test_a_bug_while_restoring_is_a_crash_with_its_traceback(tmp_path):
    """A checkpoint of this format whose counters this trainer does not know: only a
    format change without a new FORMAT_VERSION makes one, a bug, so not exit 2."""
    out = tmp_path / "out"
    assert train(out, "--epochs", "1").returncode == 0
    path = checkpoint.epoch_path(out, 1)
    saved = checkpoint.load(path)
    saved["totals"]["renamed_counter"] = 1
    torch.save(saved, path)
    proc = train(out, "--epochs", "2")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "TypeError" in proc.stderr
    assert "renamed_counter" in proc.stderr.splitlines()[-1]
    assert "resnet50-train: error" not in proc.stderr


# ------------------------------------------------------------------ the mid-epoch checkpoint

def mid_epoch_state(epoch, steps):
    """Saved `steps` steps into the epoch after `epoch` (10 steps an epoch, as state())."""
    return {**state(epoch), "step": 10 * epoch + steps}


def test_the_mid_epoch_checkpoint_resumes_when_it_has_trained_more(tmp_path):
    mid = tmp_path / checkpoint.MID_EPOCH_NAME
    checkpoint.save_atomic(mid_epoch_state(0, 4), mid)
    assert checkpoint.newest_valid(tmp_path)[0] == mid  # stopped in the first epoch
    checkpoint.save_atomic(state(1), checkpoint.epoch_path(tmp_path, 1))
    assert checkpoint.newest_valid(tmp_path)[0] == checkpoint.epoch_path(tmp_path, 1)
    checkpoint.save_atomic(mid_epoch_state(1, 4), mid)
    path, loaded = checkpoint.newest_valid(tmp_path)
    assert (path, loaded["step"]) == (mid, 14)


def test_an_unreadable_mid_epoch_checkpoint_is_set_aside_for_an_epoch_one(tmp_path, caplog):
    mid = tmp_path / checkpoint.MID_EPOCH_NAME
    mid.write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(ConfigError) as caught:  # nothing else to resume: nothing moves
        checkpoint.newest_valid(tmp_path)
    assert str(caught.value) == (
        f"cannot resume: checkpoint {mid} does not load (a truncated zip archive) and there "
        f"is no per-epoch checkpoint; move it out of {tmp_path} to start afresh, or use "
        "another --output-dir")
    assert mid.read_bytes() == b"PK\x03\x04 cut"
    checkpoint.save_atomic(state(1), checkpoint.epoch_path(tmp_path, 1))
    assert checkpoint.newest_valid(tmp_path)[0] == checkpoint.epoch_path(tmp_path, 1)
    assert caplog.messages == [f"skipping unreadable checkpoint {mid}: a truncated zip "
                               f"archive; kept as {checkpoint.MID_EPOCH_NAME}.unreadable"]
    assert not mid.exists()


def test_a_mid_epoch_checkpoint_resumes_when_no_epoch_checkpoint_loads(tmp_path):
    checkpoint.epoch_path(tmp_path, 1).write_bytes(b"garbage")
    checkpoint.save_atomic(mid_epoch_state(1, 4), tmp_path / checkpoint.MID_EPOCH_NAME)
    assert checkpoint.newest_valid(tmp_path)[0] == tmp_path / checkpoint.MID_EPOCH_NAME
