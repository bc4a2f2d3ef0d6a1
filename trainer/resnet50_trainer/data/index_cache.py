"""--cache-dataset (on by default): the dataset's file index kept in --output-dir and reused
on later starts.

Scanning ImageNet's 1.3 million files (or parsing its lists) takes minutes on a network
file system, on every start of every rank. The index is stored with a fingerprint of the
dataset root: its absolute path, --num-classes (it changes discover's label checks) and
the mtime and size of train/, val/ and the list files. Adding or removing a class folder
or rewriting a list changes it; a file added inside an existing class folder does not
(a directory's mtime follows only its own entries), as torchvision's cache, keyed on the
path alone, does not see it either: delete the index file then.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from resnet50_trainer.data.layouts import DatasetIndex, discover

log = logging.getLogger(__name__)

INDEX_FILE = "dataset-index.json"
_VERSION = 1
_WATCHED = ("train", "val", "train_list.txt", "val_list.txt")


def fingerprint(data_path: str | os.PathLike[str], num_classes: int | None) -> dict[str, Any]:
    """What must not have changed for a stored index to hold."""
    root = Path(os.path.abspath(data_path))  # relative sample paths are relative to the cwd
    stats = {}
    for name in _WATCHED:
        try:
            st = (root / name).stat()
        except OSError:
            continue
        stats[name] = [st.st_mtime_ns, st.st_size]
    return {"version": _VERSION, "data_path": str(root), "num_classes": num_classes,
            "stats": stats}


def cached_discover(data_path: str | os.PathLike[str], num_classes: int | None,
                    output_dir: str | os.PathLike[str], is_main: bool) -> DatasetIndex:
    """discover(), or the index stored in output_dir when its fingerprint still matches.

    Only the main rank writes it; the others read it when it is there and current, else
    scan as well (atomic replacement: they never see half a file)."""
    path = Path(output_dir) / INDEX_FILE
    expected = fingerprint(data_path, num_classes)
    stored = _read(path)
    if stored is not None and stored.get("fingerprint") == expected:
        log.info("dataset index read from %s: train/, val/ and the lists are unchanged; "
                 "delete it (or pass --no-cache-dataset) after adding images to a class "
                 "folder", path)
        return _index_from_json(stored["index"])
    index = discover(data_path, num_classes)
    if is_main:
        try:
            _write_atomically(path, {"fingerprint": expected, "index": _index_to_json(index)})
        except OSError as exc:  # the index only saves time: train without it
            log.warning("cannot write the dataset index %s: %s", path, exc)
        else:
            log.info("dataset index written to %s: later starts read it instead of "
                     "listing the dataset again", path)
    return index


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        return stored if isinstance(stored, dict) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # unreadable or damaged: index again
        log.warning("ignoring the dataset index %s: %s", path, exc)
        return None


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp*"):  # of a start killed while writing
        stale.unlink(missing_ok=True)
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        text = json.dumps(content)  # in one piece: json.dump streams in Python, 3x slower
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _index_to_json(index: DatasetIndex) -> dict[str, Any]:
    return {"train": index.train, "val": index.val, "num_classes": index.num_classes,
            "layout": index.layout, "classes": index.classes}


def _index_from_json(data: dict[str, Any]) -> DatasetIndex:
    return DatasetIndex(
        train=[(path, label) for path, label in data["train"]],
        val=[(path, label) for path, label in data["val"]],
        num_classes=data["num_classes"], layout=data["layout"], classes=data["classes"])
