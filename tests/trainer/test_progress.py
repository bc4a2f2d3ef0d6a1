import pytest

from resnet50_trainer.contract import format_duration
from resnet50_trainer.progress import MetricsLog, read_metrics, result_line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(42, "42s"), (500, "8m20s"), (600, "10m"), (11 * 3600, "11h"), (12 * 3600 + 43 * 60, "12h43m"),
     (4 * 86400 + 3 * 3600 + 59, "4d3h")],
)
def test_durations_read_like_the_reference_results(seconds, text):
    assert format_duration(seconds) == text


def test_result_line_has_the_reference_form():
    assert result_line(76.0213, 330.4, 4 * 86400 + 3 * 3600, 280) == (
        "Acc@1=76.02,FPS=330,Time=4d3h,BatchSize=280")


def test_metrics_log_appends_json_lines(tmp_path):
    log = MetricsLog(tmp_path / "out")
    log.write("epoch", epoch=1, acc1=1.5)
    MetricsLog(tmp_path / "out").write("epoch", epoch=2, acc1=3.0)
    records = read_metrics(tmp_path / "out")
    assert [(r["kind"], r["epoch"], r["acc1"]) for r in records] == [("epoch", 1, 1.5),
                                                                    ("epoch", 2, 3.0)]
