"""Live progress end to end: the trainer's metrics endpoint, status.training, the printer
columns, hang detection and why pods do not start."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
from kube import Operator, create_training, events, table, training_status, wait_for
from test_jobs import JOB_TIMEOUT, cpu_training, wait_phase

from devcluster.controlplane import find_binaries, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator(cluster, namespace, tmp_path):
    """The operator reading progress every second (15 s in production)."""
    op = Operator(cluster, tmp_path / "operator.log", namespace=namespace, settings={
        "RENDEZVOUS_PORT": str(free_port()), "METRICS_PORT": str(free_port()),
        "PROGRESS_INTERVAL_SECONDS": "1"}).start()
    yield op
    op.stop()


def kubectl_get(cluster, namespace, name) -> dict[str, str]:
    found, _ = find_binaries()
    out = subprocess.run([str(found["kubectl"]), "get", "r50t", name, "-n", namespace],
                         capture_output=True, text=True, env={**os.environ, **cluster.env()},
                         timeout=60, check=True).stdout
    (row,) = table(out)
    return row


def test_a_running_job_shows_epoch_and_images_per_second(api, cluster, namespace, operator,
                                                         nodes, tmp_path):
    create_training(api, namespace, cpu_training("live", tmp_path / "ckpt",
                                                 training={"preset": "cpu-smoke", "epochs": 3}))

    def reported():
        st = training_status(api, namespace, "live")
        return st if st.get("phase") == "Running" and st.get("training", {}).get(
            "imagesPerSecond") else None
    progress = wait_for("progress in the status", reported, timeout=JOB_TIMEOUT)["training"]
    assert re.fullmatch(r"[123]/3", progress["epoch"]) and progress["lastProgressTime"]
    row = kubectl_get(cluster, namespace, "live")
    assert re.fullmatch(r"[123]/3", row["EPOCH"]) and int(row["IMG/S"]) > 0, row

    done = wait_phase(api, namespace, "live", "Succeeded")

    final = done["training"]  # from the master's termination message
    assert (final["epoch"], final["eta"]) == ("3/3", "0s")
    assert final["top1"] is not None and final["lastCheckpoint"]["epoch"] == 3
    row = kubectl_get(cluster, namespace, "live")
    assert (row["PHASE"], row["EPOCH"], row["ETA"]) == ("Succeeded", "3/3", "0s")


def test_a_paused_trainer_is_restarted_for_no_progress(api, namespace, operator, nodes,
                                                      tmp_path):
    body = cpu_training("stuck", tmp_path / "ckpt", training={"preset": "cpu-smoke",
                                                              "epochs": 50})
    body["spec"]["runPolicy"] = {"progressDeadlineSeconds": 20}
    create_training(api, namespace, body)
    wait_for("progress", lambda: training_status(api, namespace, "stuck").get("training"),
             timeout=JOB_TIMEOUT)
    nodes.signal_all(namespace, "stuck-0", signal.SIGSTOP)  # metrics endpoint included
    try:
        st = wait_for("the NoProgress restart", lambda: training_status(
            api, namespace, "stuck").get("restartHistory"), timeout=90)
    finally:
        nodes.signal_all(namespace, "stuck-0", signal.SIGCONT)  # to take its SIGTERM

    assert st[0]["reason"] == "NoProgress"
    assert "no training progress for 20 s" in st[0]["message"]
    restarting = wait_for("the Event", lambda: [  # posted after the status
        e for e in events(api, namespace, "stuck") if e.reason == "Restarting"])
    assert "NoProgress" in restarting[0].message
    assert training_status(api, namespace, "stuck")["restarts"] == 1


def test_a_volume_that_cannot_be_mounted_is_the_pending_reason(api, namespace, operator,
                                                                nodes, tmp_path):
    missing = tmp_path / "no-such-dataset"
    create_training(api, namespace, cpu_training("nomount", tmp_path / "ckpt", dataset={
        "hostPath": {"path": str(missing)}}))

    def waiting():
        st = training_status(api, namespace, "nomount")
        running = next((c for c in st.get("conditions", []) if c["type"] == "Running"), {})
        return running if running.get("reason") == "FailedMount" else None
    running = wait_for("the FailedMount condition", waiting)

    assert f"{missing} is not a directory" in running["message"]
    warnings = wait_for("the Event", lambda: [  # posted after the status
        e for e in events(api, namespace, "nomount") if e.type == "Warning"])
    assert [e.reason for e in warnings] == ["FailedMount"]
    assert training_status(api, namespace, "nomount")["phase"] == "Pending"
