"""What rank 0 reports: log lines, the metrics file and the final result line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from resnet50_trainer.contract import format_duration

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """One JSON object per line in OUTPUT_DIR/metrics.jsonl, appended across restarts."""

    def __init__(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / METRICS_NAME

    def write(self, kind: str, **fields: Any) -> None:
        record = {"kind": kind, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / METRICS_NAME
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def result_line(acc1: float, images_per_second: float, seconds: float, batch_size: int) -> str:
    """The line the reference results are quoted in: Acc@1=76.02,FPS=330,Time=4d3h,BatchSize=280"""
    return (
        f"Acc@1={acc1:.2f},FPS={images_per_second:.0f},Time={format_duration(seconds)},"
        f"BatchSize={batch_size}"
    )
