import os

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
