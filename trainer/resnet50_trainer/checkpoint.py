"""Atomic checkpoints in --output-dir and finding the one to resume from.

Per-epoch checkpoints (checkpoint_epochNNNN.pt) are written after each epoch's evaluation;
one mid-epoch checkpoint (checkpoint_mid_epoch.pt) is written on SIGTERM and every
--checkpoint-interval-minutes, replaced by the next one and removed once the epoch's own
checkpoint is written. A run resumes from whichever has trained more steps.

A checkpoint file appears under its final name only once it is complete and on disk
(temporary file, fsync, rename, fsync of the directory), so a crash or a kill at any
moment leaves the previous checkpoints untouched. A file that still fails to load (a
disk that lied, a truncated copy) is moved aside when resuming, never deleted: the run
continues from the checkpoint before it, or stops with a ConfigError when none loads.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from resnet50_trainer.errors import ConfigError, access_error

FORMAT_VERSION = 1
BEST_NAME = "best.pt"
MID_EPOCH_NAME = "checkpoint_mid_epoch.pt"
_EPOCH_FILE = re.compile(r"^checkpoint_epoch(\d+)\.pt$")
_REQUIRED_KEYS = frozenset({"format", "epoch", "step", "model", "optimizer", "compat"})
RESUME_KEYS = _REQUIRED_KEYS | {"scaler", "ema", "totals"}  # what a run reads to continue
UNREADABLE_SUFFIX = ".unreadable"
log = logging.getLogger(__name__)


class Unreadable(ValueError):
    """A checkpoint file that does not load: empty, truncated, not a torch archive, failing
    a CRC check, or not a checkpoint of this trainer and format. `reason` says which."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


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


def recover_best(output_dir: Path, state: dict[str, Any]) -> None:
    """Make best.pt hold the best Acc@1 that the resumed checkpoint `state` records.

    A trainer that wrote the epoch checkpoint before best.pt could lose best.pt to a kill
    between the two writes. It is copied back when `state` is that best epoch; otherwise
    the best weights are gone, which one warning says, and the run continues.
    """
    totals = state["totals"]
    best_acc1, best_epoch = totals.get("best_acc1"), totals.get("best_epoch")
    if best_acc1 is None:
        return
    best = output_dir / BEST_NAME
    try:
        held = load(best, _REQUIRED_KEYS | {"totals"})["totals"].get("best_acc1")
    except Unreadable:
        held = None
    if held is not None and held >= best_acc1:  # higher: killed before this epoch's checkpoint
        return
    if best_epoch == state["epoch"]:
        save_atomic(state, best)
        log.warning("recovered %s from the checkpoint of epoch %d (Acc@1 %.3f)",
                    best, best_epoch, best_acc1)
        return
    log.warning("%s does not hold the best Acc@1 so far, %.3f (epoch %s), and cannot be "
                "recovered: it is written again at the next higher Acc@1",
                best, best_acc1, "unknown" if best_epoch is None else best_epoch)


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
    for tmp in output_dir.glob(".checkpoint_*.pt.tmp*"):
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


def load(path: Path, keys: Collection[str] = _REQUIRED_KEYS) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; Unreadable when the file does not load or is not a
    checkpoint of this format holding `keys`, AccessError when this uid may not read it."""
    try:
        problem = _archive_problem(path)
    except PermissionError as exc:
        raise access_error("checkpoint", path, "readable", exc) from None
    except OSError as exc:
        raise Unreadable(path, f"cannot be read: {exc.strerror}") from None
    if problem:
        raise Unreadable(path, problem)
    try:  # what torch.load raises here comes from the file's contents: any exception
        state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:
        raise Unreadable(path, _torch_load_problem(exc)) from exc
    if not isinstance(state, dict):
        raise Unreadable(path, f"not a resnet50-train checkpoint (a {type(state).__name__})")
    missing = sorted(set(keys) - state.keys())
    if missing:
        raise Unreadable(path, "not a resnet50-train checkpoint (no "
                         + ", ".join(repr(k) for k in missing) + ")")
    if state["format"] != FORMAT_VERSION:
        raise Unreadable(path, f"format {state['format']}, this trainer reads {FORMAT_VERSION}")
    return state


def _archive_problem(path: Path) -> str | None:
    """What is wrong with the file as a zip archive, which torch.save writes. torch.load
    does not check the CRCs: a flipped bit would load as a wrong weight."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file"
    if not zipfile.is_zipfile(path):
        if head == b"PK\x03\x04":  # a zip archive's start without its end (central directory)
            return "a truncated zip archive"
        return "not a torch archive"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        return f"a corrupt zip archive ({exc})"
    return f"a corrupt torch archive ({bad} fails its CRC check)" if bad else None


def _torch_load_problem(exc: Exception) -> str:
    """torch.load's error in one short line."""
    text = str(exc).strip()
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsupported:  # weights_only refused an object: not one of our checkpoints
        return f"not a resnet50-train checkpoint (it holds a {unsupported[1]})"
    first = text.splitlines()[0].split(". ")[0] if text else ""
    return f"a corrupt torch archive ({type(exc).__name__}{': ' + first if first else ''})"


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint out of the resume order, keeping its bytes:
    NAME.unreadable (NAME.unreadable2, ... when that exists)."""
    aside, n = path.with_name(path.name + UNREADABLE_SUFFIX), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}{UNREADABLE_SUFFIX}{n}")
    os.rename(path, aside)
    return aside


def newest_valid(output_dir: Path,
                 keys: Collection[str] = _REQUIRED_KEYS) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume: the mid-epoch one when it loads and has trained more steps
    than the newest valid per-epoch one (newest_valid_epoch), else that one. A mid-epoch
    checkpoint that does not load is set aside with a warning when a per-epoch one loads,
    and is a ConfigError otherwise, as per-epoch ones are."""
    mid = output_dir / MID_EPOCH_NAME
    if not mid.is_file():
        return newest_valid_epoch(output_dir, keys)
    try:
        mid_state = load(mid, keys)
    except Unreadable as bad:
        epoch = newest_valid_epoch(output_dir, keys)
        if epoch is None:  # as for per-epoch files: never start afresh over a checkpoint
            raise ConfigError(
                f"cannot resume: checkpoint {mid} does not load ({bad.reason}) and there is "
                f"no per-epoch checkpoint; move it out of {output_dir} to start afresh, or "
                "use another --output-dir") from None
        log.warning("skipping unreadable checkpoint %s: %s; kept as %s",
                    mid, bad.reason, set_aside(mid).name)
        return epoch
    try:
        epoch = newest_valid_epoch(output_dir, keys)
    except ConfigError:  # no per-epoch checkpoint loads, but this one does
        return mid, mid_state
    return epoch if epoch is not None and epoch[1]["step"] >= mid_state["step"] \
        else (mid, mid_state)


def newest_valid_epoch(output_dir: Path, keys: Collection[str] = _REQUIRED_KEYS
                       ) -> tuple[Path, dict[str, Any]] | None:
    """The newest per-epoch checkpoint that loads with `keys`, None when there is none.

    A newer one that does not load is moved aside (set_aside) with a warning that names it
    and why: the epoch trained again would otherwise overwrite it. When files exist but
    none loads, a ConfigError says so and what to do, and every file stays in place.
    """
    unreadable: list[Unreadable] = []
    for path in epoch_checkpoints(output_dir):
        try:
            state = load(path, keys)
        except Unreadable as exc:
            unreadable.append(exc)
            continue
        for bad in unreadable:
            log.warning("skipping unreadable checkpoint %s: %s; kept as %s",
                        bad.path, bad.reason, set_aside(bad.path).name)
        return path, state
    if not unreadable:
        return None
    newest, earlier = unreadable[0], len(unreadable) - 1
    raise ConfigError(
        f"cannot resume: checkpoint {newest.path} does not load ({newest.reason})"
        + (f" and neither do the {earlier} earlier ones" if earlier > 1 else
           " and neither does the earlier one" if earlier else " and there is no earlier one")
        + f"; move the checkpoint_epoch*.pt files out of {output_dir} to start afresh, "
        "or use another --output-dir"
    )


# The options behind each field of `compat`, to say how to continue a checkpoint.
_COMPAT_OPTIONS = {"model": "--model", "num_classes": "--num-classes",
                   "global_batch_size": "--global-batch-size", "lr_scheduler": "--lr-scheduler",
                   "opt": "--opt"}
# Fields that checkpoints of older versions lack, and what those versions always did.
_ABSENT_MEANS = {"opt": "sgd"}


def _option_for(key: str, value: Any) -> str | None:
    if key == "model_ema":
        return "--model-ema" if value else "--no-model-ema"
    return f"{_COMPAT_OPTIONS[key]} {value}" if key in _COMPAT_OPTIONS else None


def check_compatible(state: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Refuse to continue a run whose model or optimisation would silently change."""
    found = {**_ABSENT_MEANS, **state["compat"]}
    differing = [key for key, value in expected.items() if found.get(key) != value]
    if not differing:
        return
    diffs = [f"{key}: {found.get(key)!r} in the checkpoint, {expected[key]!r} now"
             for key in differing]
    options = [o for key in differing if (o := _option_for(key, found.get(key))) is not None]
    raise ConfigError(
        f"checkpoint {path} was written by an incompatible configuration ("
        + "; ".join(diffs)
        + "); use another --output-dir to start afresh"
        + (", or continue it with the checkpoint's " + " ".join(options) if options else "")
    )


# The options that decide how the optimizer groups the parameters (optim.parameter_groups).
_GROUPING_OPTIONS = {"weight_decay": "--weight-decay", "norm_weight_decay": "--norm-weight-decay",
                     "bias_weight_decay": "--bias-weight-decay",
                     "transformer_embedding_decay": "--transformer-embedding-decay"}


def check_param_groups(state: dict[str, Any], optimizer: torch.optim.Optimizer,
                       config: dict[str, Any], path: Path) -> None:
    """The optimizer state fits only the same parameter groups (one per weight decay):
    refuse another grouping with the options that made it, as check_compatible does."""
    saved = [len(group["params"]) for group in state["optimizer"].get("param_groups", [])]
    now = [len(group["params"]) for group in optimizer.param_groups]
    if saved == now:
        return
    old = state.get("config") or {}

    def shown(value: Any) -> str:
        return "unset" if value is None else str(value)

    diffs = [f"{option} {shown(old[key])} in the checkpoint, {shown(config[key])} now"
             for key, option in _GROUPING_OPTIONS.items()
             if key in old and old[key] != config[key]]
    raise ConfigError(
        f"checkpoint {path} groups the parameters for weight decay differently ("
        + ("; ".join(diffs) or f"{len(saved)} groups in the checkpoint, {len(now)} now")
        + "); give the checkpoint's values to continue it, or use another --output-dir"
    )
