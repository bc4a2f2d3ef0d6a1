"""A dataset or checkpoint path the trainer's uid may not use: exit 4, one line that names
the path, the uid, the owner and mode to fix, and the fix (what the operator shows)."""

import os
import subprocess
import sys

import pytest

from resnet50_trainer.errors import EXIT_ACCESS, AccessError, access_error

OTHER_UID = 1000  # owns the forbidden directories when the tests run as root


def test_the_message_names_path_uid_owner_mode_and_fix(tmp_path):
    (tmp_path / "ckpt").mkdir(mode=0o755)
    err = access_error("checkpoint directory (--output-dir)", tmp_path / "ckpt" / "run1",
                       "writable", PermissionError(13, "Permission denied"))
    assert isinstance(err, AccessError) and err.exit_code == EXIT_ACCESS == 4
    text = str(err)
    assert text.startswith(f"checkpoint directory (--output-dir) {tmp_path}/ckpt/run1 is not "
                           f"writable by uid {os.getuid()} gid {os.getgid()} (Permission denied)")
    # The directory to fix is the first one that exists on the way.
    assert f"{tmp_path}/ckpt is owned by uid {os.getuid()} gid {os.getgid()}, mode 0755" in text
    assert f"chown -R {os.getuid()}:{os.getgid()}" in text and "fsGroup" in text


@pytest.fixture
def scratch(tmp_path):
    yield tmp_path
    for d in tmp_path.iterdir():
        d.chmod(0o755)  # so that pytest can remove it


def forbidden_dir(path, others):
    """A directory the trainer may only use as the permission bits `others` (0-7) allow:
    as root, the trainer runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH and the
    directory belongs to OTHER_UID; otherwise the trainer is its owner with those bits."""
    path.mkdir()
    if os.getuid() == 0:
        os.chown(path, OTHER_UID, OTHER_UID)
        path.chmod(0o700 | others)
    else:
        path.chmod(others << 6)
    return path


def run_trainer(args):
    code = "import sys; from resnet50_trainer.cli import main; main(sys.argv[1:])"
    # Root may read and write anything: the same bits, without the capabilities that say so.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] \
        if os.getuid() == 0 else []
    return subprocess.run([*drop, sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=300)


def test_an_unwritable_checkpoint_directory_exits_4_in_one_line(scratch):
    ckpt = forbidden_dir(scratch / "ckpt", 0o5)  # r-x
    run = run_trainer(["--preset", "cpu-smoke", "--synthetic", "--device", "cpu",
                       "--output-dir", str(ckpt / "run1")])
    assert run.returncode == EXIT_ACCESS, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"resnet50-train: error: checkpoint directory (--output-dir) "
                           f"{ckpt}/run1 is not writable by uid {os.getuid()}")
    owner = OTHER_UID if os.getuid() == 0 else os.getuid()
    assert f"{ckpt} is owned by uid {owner}" in line


def test_an_unreadable_dataset_exits_4_in_one_line(scratch):
    data = forbidden_dir(scratch / "imagenet", 0)
    out = scratch / "out"
    run = run_trainer(["--data-path", str(data), "--device", "cpu", "--workers", "0",
                       "--output-dir", str(out)])
    assert run.returncode == EXIT_ACCESS, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert f"dataset path {data} is not readable by uid" in line
