"""Atomic checkpoints in --output-dir and finding the one to resume from.

A checkpoint file appears under its final name only once it is complete and on disk
(temporary file, fsync, rename, fsync of the directory), so a crash or a kill at any
moment leaves the previous checkpoints untouched. Files that still fail to load (a
disk that lied, a truncated copy) are skipped with a warning when resuming.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from resnet50_trainer.errors import ConfigError, access_error

FORMAT_VERSION = 1
BEST_NAME = "best.pt"
_EPOCH_FILE = re.compile(r"^checkpoint_epoch(\d+)\.pt$")
_REQUIRED_KEYS = {"format", "epoch", "step", "model", "optimizer", "compat"}
log = logging.getLogger(__name__)


def epoch_path(output_dir: Path, epoch: int) -> Path:
    """The checkpoint written after `epoch` epochs are complete."""
    return output_dir / f"checkpoint_epoch{epoch:04d}.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_writable(output_dir: Path) -> None:
    """Create --output-dir if needed and make sure files can be written there."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except PermissionError as exc:
        raise access_error("checkpoint directory (--output-dir)", output_dir, "writable",
                           exc) from None
    except OSError as exc:
        raise ConfigError(f"--output-dir {output_dir} is not writable: {exc.strerror} "
                          f"(running as uid {os.getuid()})") from None


def remove_stale_temporaries(output_dir: Path) -> None:
    """Half-written files of a run that was killed while saving."""
    for tmp in output_dir.glob(".checkpoint_epoch*.pt.tmp*"):
        tmp.unlink(missing_ok=True)
    for tmp in output_dir.glob(f".{BEST_NAME}.tmp*"):
        tmp.unlink(missing_ok=True)


def epoch_checkpoints(output_dir: Path) -> list[Path]:
    """Per-epoch checkpoints, newest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m[1]), p) for p in output_dir.iterdir() if (m := _EPOCH_FILE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def prune(output_dir: Path, keep: int) -> None:
    for old in epoch_checkpoints(output_dir)[keep:]:
        old.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; ValueError when it is not one of ours."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not _REQUIRED_KEYS <= state.keys():
        raise ValueError("not a resnet50-train checkpoint")
    if state["format"] != FORMAT_VERSION:
        raise ValueError(f"format {state['format']}, this trainer reads {FORMAT_VERSION}")
    return state


def newest_valid(output_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    for path in epoch_checkpoints(output_dir):
        try:
            return path, load(path)
        except Exception as exc:  # any unreadable file: try the one before it
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
    return None


def check_compatible(state: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Refuse to continue a run whose model or optimisation would silently change."""
    found = state["compat"]
    diffs = [
        f"{key}: {found.get(key)!r} in the checkpoint, {value!r} now"
        for key, value in expected.items()
        if found.get(key) != value
    ]
    if diffs:
        raise ConfigError(
            f"checkpoint {path} was written by an incompatible configuration ("
            + "; ".join(diffs)
            + "); use another --output-dir to start afresh"
        )
