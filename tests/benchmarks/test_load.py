"""benchmarks/load.py on a tiny load: the report's rows, and what an idle training costs.

Its own control plane and operators, as the measurement has; no assertion on time or CPU,
which a shared machine does not keep.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from devcluster.controlplane import binaries_available

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import load  # noqa: E402

pytestmark = pytest.mark.cluster
IDLE, BIG = 6, 3


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = binaries_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("load") / "load.json"
    returned = load.main(["--idle", str(IDLE), "--big-nodes", str(BIG), "--window", "12",
                          "--settle", "2", "--json", str(out)])
    assert json.loads(out.read_text()) == returned
    return returned


def test_the_report_has_a_row_per_load_and_phase(report):
    assert [r["load"] for r in report["rows"]] == [
        f"{IDLE} idle, Pending", f"{IDLE} idle, Running",
        f"{BIG}-node training: creating its pods", f"{BIG}-node training, Pending",
        f"{BIG}-node training, Running", f"{BIG}-node training: deleting it"]
    assert report["machine"]["kubernetes"] and report["machine"]["cpus"]
    assert report["command"].startswith("python benchmarks/load.py --idle 6")
    table = load.format_table(report["rows"]).splitlines()
    assert len(table) == 2 + len(report["rows"])
    for row in report["rows"]:
        assert row["seconds"] > 0 and row["rss_mib"] > 0, row
        # Only the operator's own user is counted: what it sent comes from its clients.
        assert all(ua.startswith(("OpenAPI-Generator/", "kopf/")) for ua in row["user_agents"])


def test_the_burst_creates_each_pod_once(report):
    burst = report["rows"][2]
    assert burst["by_request"]["create pods"] == BIG, burst["by_request"]


def test_an_idle_training_costs_few_requests(report):
    """Under 0.2 requests/s per training of the idle scenario, leader election (a cost of
    the process, not of a training) aside: the sweep's list of all trainings, a resync pass
    a minute, kopf's watches (a sweep that read each training, as it once did, costs 0.6)."""
    for row in report["rows"]:
        if row["scenario"] == "idle":
            per_training = sum(n for what, n in row["by_request"].items()
                               if not what.endswith(" leases")) / row["seconds"] / row["trainings"]
            assert per_training < 0.2, row


def test_events_are_not_read_by_a_namespace_wide_list(report):
    """A watch of Events is fine, and so is a field-selected list; a LIST of every Event in
    the namespace per training is not."""
    for row in report["rows"]:
        assert not [what for what in row["by_request"]
                    if what.startswith("list events") and "fieldSelector" not in what], row
