"""benchmarks/short_run.py without training: the digits data set on disk, reading each
contender's accuracy from its captured output, and the result table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import short_run  # noqa: E402

# Lines as torchvision's references/classification/train.py prints them (from a CPU run):
# two epochs' evaluations, then the EMA evaluation that --model-ema adds.
TORCHVISION_TAIL = """\
Epoch: [1] Total time: 0:04:38
Test:   [0/5]  eta: 0:00:18  loss: 2.1875 (2.1875)  acc1: 46.8750 (46.8750)  time: 3.6089
Test:  Total time: 0:00:12
Test:  Acc@1 10.000 Acc@5 50.000
Epoch: [1]  [ 0/24]  eta: 0:04:34  lr: 0.025  loss: 2.6346 (2.6346)  acc1: 7.8125 (7.8125)
Test:  Acc@1 61.333 Acc@5 95.667
Test: EMA Acc@1 12.000 Acc@5 52.000
Training time 0:09:52
"""


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("short-run") / "digits"
    return root, short_run.write_digits_dataset(root)


def test_digits_are_real_decodable_jpegs_in_a_stratified_split(digits):
    from sklearn.datasets import load_digits

    root, counts = digits
    per_class = np.bincount(load_digits().target)
    classes = [f"digit_{c}" for c in range(10)]
    assert sorted(counts["train"]) == sorted(counts["val"]) == classes
    assert counts["val"] == {c: 30 for c in classes}
    assert counts["train"] == {c: int(per_class[i]) - 30 for i, c in enumerate(classes)}
    assert sum(counts["train"].values()) == 1497 and sum(counts["val"].values()) == 300

    names = {}
    for split in ("train", "val"):
        assert sorted(p.name for p in (root / split).iterdir()) == classes
        for c in classes:
            files = sorted((root / split / c).iterdir())
            assert len(files) == counts[split][c]
            names[split, c] = {f.name for f in files}
            for f in files:
                assert f.suffix == ".JPEG"
                with Image.open(f) as img:
                    assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (32, 32))
                    pixels = np.asarray(img)
                # A scanned digit: dark background, bright strokes, not a flat image.
                assert pixels.min() < 40 and pixels.max() > 150
    # No image is in both splits.
    for c in classes:
        assert not names["train", c] & names["val", c]


def test_the_split_is_the_same_every_time(digits, tmp_path):
    root, _ = digits
    again = tmp_path / "again"
    short_run.write_digits_dataset(again)
    for split in ("train", "val"):
        first = sorted(str(p.relative_to(root)) for p in root.glob(f"{split}/*/*"))
        second = sorted(str(p.relative_to(again)) for p in again.glob(f"{split}/*/*"))
        assert first == second


def test_torchvision_accuracy_is_its_last_plain_test_line():
    assert short_run.parse_torchvision_acc(TORCHVISION_TAIL) == (61.333, 95.667)
    assert short_run.parse_torchvision_acc("Start training\nTraceback ...\n") is None


def test_our_accuracy_is_the_last_metrics_record_with_acc1(tmp_path):
    records = [
        {"kind": "start", "time": 1.0, "resumed_from": None, "epoch": 0, "world_size": 2},
        {"kind": "epoch", "time": 2.0, "epoch": 1, "epochs": 2, "loss": 2.3, "acc1": 20.0,
         "acc5": 60.0},
        {"kind": "epoch", "time": 3.0, "epoch": 2, "epochs": 2, "loss": 1.1, "acc1": 71.5,
         "acc5": 97.25},
        {"kind": "result", "time": 3.1, "acc1": 71.5, "acc5": 97.25,
         "line": "Acc@1=71.50,FPS=98,Time=2m,BatchSize=32"},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert short_run.read_ours_acc(tmp_path) == (71.5, 97.25)


def test_our_accuracy_falls_back_to_the_result_line(tmp_path):
    stdout = ("2025-01-01 10:00:00 Epoch 1/1 done: loss 2.1  Acc@1 33.000  Acc@5 80.000\n"
              "2025-01-01 10:00:01 Acc@1=33.00,FPS=95,Time=1m,BatchSize=32\n")
    assert short_run.read_ours_acc(tmp_path, stdout) == (33.0, None)
    assert short_run.read_ours_acc(tmp_path, "resnet50-train: error: no data\n") is None


def test_table_has_a_row_per_contender_with_seeds_mean_and_time():
    R = short_run.Result
    results = [
        R("ours", 0, 70.0, 95.0, 100.0, "python -m resnet50_trainer --seed 0"),
        R("ours", 1, 72.0, 96.0, 110.0, "python -m resnet50_trainer --seed 1"),
        R("plain", 0, 60.5, 90.0, 80.0, "python benchmarks/short_run.py"),
        R("plain", 1, None, None, 5.0, "python benchmarks/short_run.py", error="boom"),
    ]
    lines = short_run.format_table(results, [0, 1]).splitlines()
    assert lines[0] == "| contender | seed 0 | seed 1 | mean | s/run |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| ours | 70.00 | 72.00 | 71.00 ± 1.41 | 105 |"
    assert lines[3] == "| plain | 60.50 | failed | 60.50 | 42 |"
    assert len(lines) == 4


def test_torchvision_is_skipped_with_a_message_without_its_scripts(tmp_path, capsys):
    out = tmp_path / "r.json"
    results = short_run.main(["--contenders", "torchvision", "--work-dir", str(tmp_path),
                              "--json", str(out)])
    assert results == []
    printed = capsys.readouterr().out
    assert "torchvision: skipped, --torchvision-references DIR was not given." in printed
    written = json.loads(out.read_text())
    assert written["results"] == [] and written["settings"]["epochs"] == 12


def test_torchvision_runs_from_its_folder_unseeded_and_leaves_no_checkpoints(
    digits, tmp_path, monkeypatch
):
    """A stand-in train.py that prints what the real one does, no training."""
    # As inside a torchrun job: train.py would take them for its rank and go for nccl.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "train.py").write_text(
        "import os, pathlib, sys\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--output-dir') + 1])\n"
        "out.mkdir(parents=True)\n"
        "(out / 'model_0.pth').write_bytes(b'x')\n"
        "print('hash seed', os.environ['PYTHONHASHSEED'], 'RANK' in os.environ)\n"
        "print('Test:  Acc@1 42.000 Acc@5 88.000')\n"
    )
    args = short_run.build_parser().parse_args(
        ["--torchvision-references", str(refs), "--epochs", "3"])
    root, _ = digits
    r = short_run.run_torchvision(args, root, 1, tmp_path / "run")
    assert (r.acc1, r.acc5, r.error) == (42.0, 88.0, None)
    assert r.command.startswith(f"cd {refs} && PYTHONHASHSEED=1 ")
    assert " train.py --data-path " in r.command and " -b 64 --epochs 3 " in r.command
    assert "hash seed 1 False" in Path(r.log).read_text()
    assert not list((tmp_path / "run").rglob("*.pth"))
