"""`resnet50-train plot OUTPUT_DIR`: metrics.jsonl -> one PNG, through the CLI entry."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from resnet50_trainer import cli
from resnet50_trainer.plot import epoch_records, restart_epochs

T0 = 1_795_312_550.0


def epoch(n, loss, acc1=None, acc5=None, val_loss=None, ips=2400.0, t=0.0):
    record = {"kind": "epoch", "time": T0 + t, "epoch": n, "epochs": 4, "step": n * 5005,
              "loss": loss, "lr": 0.1, "images_per_second": ips, "epoch_seconds": 534.2,
              "data_seconds": 0.002}
    if acc1 is not None:
        record.update(acc1=acc1, acc5=acc5, val_loss=val_loss, val_images=50000)
    return record


# Epoch 3 was written, then the job was killed before its checkpoint was complete: the
# restart resumed after epoch 2 and trained epoch 3 again.
RECORDS = [
    {"kind": "start", "time": T0, "resumed_from": None, "epoch": 0, "world_size": 8},
    epoch(1, 6.21, 4.9, 14.2, 5.88, ips=2380.5, t=540),
    epoch(2, 5.34, 11.3, 28.7, 4.97, ips=2411.0, t=1080),
    epoch(3, 99.0, 0.1, 0.5, 99.0, ips=10.0, t=1620),  # superseded by the retrained epoch 3
    {"kind": "start", "time": T0 + 1700, "resumed_from": "/checkpoints/checkpoint_epoch0002.pt",
     "epoch": 2, "world_size": 8},
    epoch(3, 4.71, 19.8, 41.6, 4.31, ips=2405.2, t=2250),
    epoch(4, 4.22, 27.5, 52.3, 3.92, ips=2398.7, t=2790),
    {"kind": "result", "time": T0 + 2800, "acc1": 27.5, "acc5": 52.3,
     "images_per_second": 2398.8, "elapsed_seconds": 2790.0,
     "line": "Acc@1=27.50,FPS=2399,Time=46m30s,BatchSize=256"},
]


def write_log(directory, records, tail=""):
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (directory / "metrics.jsonl").write_text(text)
    return directory


def assert_real_picture(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 800 and image.height >= 300
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colours) > 20  # lines, text and legends, not a blank canvas


def test_restarts_keep_the_last_record_of_each_epoch():
    epochs = epoch_records(RECORDS)
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert epochs[2]["loss"] == 4.71
    assert restart_epochs(RECORDS) == [2]


@pytest.mark.parametrize("records, tail", [
    pytest.param(RECORDS, "", id="finished-with-a-restart"),
    pytest.param(RECORDS[:3], "", id="still-running"),
    pytest.param(RECORDS[:2], '{"kind": "epoch", "time": 17953', id="line-being-written"),
    pytest.param([RECORDS[0], epoch(1, 6.2), epoch(2, 5.3)], "", id="no-evaluation-yet"),
])
def test_plot_writes_a_png(tmp_path, capsys, records, tail):
    run = write_log(tmp_path / "run", records, tail)
    png = tmp_path / "pictures" / "run.png"
    cli.main(["plot", str(run), "-o", str(png)])
    assert_real_picture(png)
    last = epoch_records(records)[-1]["epoch"]
    assert capsys.readouterr().out == f"Wrote {png}: epochs 1-{last} of 4\n"


def test_default_output_is_in_the_output_dir(tmp_path):
    run = write_log(tmp_path / "run", RECORDS)
    done = subprocess.run([sys.executable, "-m", "resnet50_trainer", "plot", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_real_picture(run / "progress.png")


@pytest.mark.parametrize("records", [
    pytest.param(None, id="missing-log"),
    pytest.param([], id="empty-log"),
    pytest.param(RECORDS[:1], id="only-a-start"),
])
def test_no_epoch_yet_is_a_one_line_error(tmp_path, capsys, records):
    run = tmp_path / "run"
    run.mkdir()
    if records is not None:
        write_log(run, records)
    with pytest.raises(SystemExit) as exc:
        cli.main(["plot", str(run)])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert err == f"resnet50-train: error: no epoch in {run}/metrics.jsonl yet\n"
    assert not (run / "progress.png").exists()


def test_plot_without_a_directory_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["plot"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("resnet50-train: error: ") and len(err.splitlines()) == 1
