"""`resnet50-operator status`: the pure view, table by table, and its command line."""

import argparse
import datetime as dt
import io
from pathlib import Path

import pytest

from resnet50_operator import __main__ as cli
from resnet50_operator import statusview
from resnet50_operator.statusview import StatusError, error_line, fetch, render

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def training(status=None, name="r50", **spec):
    body = {
        "apiVersion": "resnet50.dev/v1alpha1", "kind": "ResNet50Training",
        "metadata": {"name": name, "namespace": "ml", "creationTimestamp": ago(4 * 3600)},
        "spec": {"nodes": 2, "gpusPerNode": 8,
                 "dataset": {"persistentVolumeClaim": {"claimName": "imagenet"}}, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def pod(index, attempt, state, phase="Running", node="gpu-a-0", name="r50", age=3600):
    return {
        "metadata": {"name": f"{name}-{index}", "namespace": "ml", "creationTimestamp": ago(age),
                     "labels": {"resnet50.dev/training": name,
                                "resnet50.dev/node-index": str(index),
                                "resnet50.dev/attempt": str(attempt)}},
        "spec": {"nodeName": node, "containers": [{"name": "trainer"}]},
        "status": {"phase": phase,
                   "containerStatuses": [{"name": "trainer", "state": state}] if state else []},
    }


def condition(type_, status, reason, message="", age=3600):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": ago(age)}


RUNNING = training({
    "phase": "Running", "attempt": 0, "podsCreated": True, "restarts": 0,
    "nodes": {"ready": 2, "total": 2}, "ready": "2/2", "gpus": 16,
    "startTime": ago(4 * 3600), "attemptStartTime": ago(4 * 3600),
    "training": {"epoch": "37/90", "step": "120/5005", "globalStep": 180_300, "loss": 2.1034,
                 "lr": 0.4, "imagesPerSecond": 21840, "top1": 61.234, "top5": 83.9,
                 "eta": "3h12m", "lastCheckpoint": {"epoch": 36, "time": ago(840)},
                 "lastProgressTime": ago(4)},
    "conditions": [condition("Created", "True", "Created", "2 node(s) x 8 process(es)",
                             4 * 3600),
                   condition("Running", "True", "AllNodesRunning", age=3 * 3600 + 50 * 60)],
})
RUNNING_PODS = [
    # listed out of order, and with a pod of an earlier attempt still terminating
    pod(1, 0, {"running": {"startedAt": ago(3600)}}, node="gpu-a-1"),
    pod(0, 0, {"running": {"startedAt": ago(3600)}}, node="gpu-a-0"),
]

FAILURE_LOG = "\n".join([
    "2026-11-22 10:58:01 Epoch [12/90] [4000/5005]  loss 3.0211  lr 0.4  img/s 21790",
    "2026-11-22 10:58:31 Epoch [12/90] [4100/5005]  loss 3.0190  lr 0.4  img/s 21802",
    "Traceback (most recent call last):",
    '  File "/opt/venv/bin/resnet50-train", line 8, in <module>',
    "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970",
    "unhandled system error (run with NCCL_DEBUG=INFO for details)",
    "Last error: socket closed by peer",
])
RESTARTED = training({
    "phase": "Running", "attempt": 1, "podsCreated": True, "restarts": 1,
    "nodes": {"ready": 1, "total": 2}, "ready": "1/2", "gpus": 16,
    "training": {"epoch": "13/90", "step": "10/5005", "loss": 3.1},
    "lastFailure": {"pod": "r50-1", "exitCode": 137, "reason": "OOMKilled",
                    "message": FAILURE_LOG},
    "restartHistory": [{"attempt": 0, "time": ago(600), "reason": "OOMKilled",
                        "message": "pod r50-1 exit code 137 (OOMKilled): " + FAILURE_LOG}],
    "conditions": [condition("Restarting", "False", "Recreated", age=540)],
})
RESTARTED_PODS = [
    pod(0, 1, {"running": {"startedAt": ago(500)}}, age=540),
    pod(1, 1, {"waiting": {"reason": "ContainerCreating"}}, phase="Pending", age=540),
    pod(1, 0, {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, phase="Failed"),
]

# Drained after an earlier OOM kill: the group restarts at once, and only the OOM kill
# counts against maxRestarts; the evicted pod is still saving its checkpoint.
DISRUPTED = training({
    "phase": "Restarting", "attempt": 2, "podsCreated": False, "restarts": 1,
    "disruptions": 1, "nodes": {"ready": 0, "total": 2}, "ready": "0/2", "gpus": 16,
    "lastFailure": {"pod": "r50-0", "exitCode": 143, "reason": "EvictionByEvictionAPI",
                    "message": "resnet50-train: stopped by SIGTERM\nEviction API: evicting"},
    "restartHistory": [
        {"attempt": 0, "time": ago(3600), "reason": "OOMKilled",
         "message": "pod r50-1 exit code 137 (OOMKilled): " + FAILURE_LOG},
        {"attempt": 1, "time": ago(20), "reason": "EvictionByEvictionAPI", "disruption": True,
         "message": "pod r50-0 exit code 143 (EvictionByEvictionAPI): Eviction API: evicting"}],
    "conditions": [condition("Restarting", "True", "EvictionByEvictionAPI",
                             "disruption 1 of 5, not counted against maxRestarts (1 of 3 "
                             "restarts used); restarting at once after pod r50-0 exit code "
                             "143 (EvictionByEvictionAPI): resnet50-train: stopped by "
                             "SIGTERM\nEviction API: evicting", age=20)],
}, restartPolicy={"maxDisruptions": 5})
DISRUPTED_PODS = [
    pod(0, 1, {"terminated": {"exitCode": 143, "reason": "Error"}}, phase="Failed", age=3000),
    pod(1, 1, {"running": {}}, age=3000),
]

FAILED = training({
    "phase": "Failed", "attempt": 0, "restarts": 0, "nodes": {"ready": 0, "total": 2},
    "gpus": 16, "completionTime": ago(60),
    "lastFailure": {"pod": "r50-0", "exitCode": 2, "reason": "ConfigurationError",
                    "message": "resnet50-train: error: no train/ or train_list.txt in /data"},
    "conditions": [condition("Failed", "True", "ConfigurationError",
                             "pod r50-0 exit code 2 (ConfigurationError): resnet50-train: "
                             "error: no train/ or train_list.txt in /data", age=60)],
})
FAILED_PODS = [
    pod(0, 0, {"terminated": {"exitCode": 2, "reason": "Error"}}, phase="Failed"),
    pod(1, 0, {"terminated": {"exitCode": 0, "reason": "Completed"}}, phase="Succeeded"),
]


# The whole view, line by line, as statusview/NAME.txt holds it: a wrong figure, a missing
# or an extra line fails. Ages are relative to NOW.
EXPECTED = Path(__file__).parent / "statusview"


@pytest.mark.parametrize("name, body, pods", [
    ("fresh-training-without-status", training(), []),
    ("empty-status", training({}, restartPolicy={"maxRestarts": 5}), []),
    ("running-with-progress-and-two-pods", RUNNING, RUNNING_PODS),
    ("restarted-with-history-and-last-failure", RESTARTED, RESTARTED_PODS),
    ("restarting-at-once-after-a-disruption", DISRUPTED, DISRUPTED_PODS),
    ("failed", FAILED, FAILED_PODS),
], ids=lambda v: v if isinstance(v, str) else "")
def test_render(name, body, pods):
    expected = (EXPECTED / f"{name}.txt").read_text()
    assert render(body, pods, NOW).splitlines() == expected.splitlines()


def test_pods_are_sorted_by_node_index_and_aligned():
    lines = render(RUNNING, RUNNING_PODS, NOW).splitlines()
    start = lines.index("Pods (attempt 0)")
    header, first, second = lines[start + 1:start + 4]
    assert header.split() == ["NAME", "INDEX", "NODE", "PHASE", "CONTAINER", "AGE"]
    assert first.split() == ["r50-0", "0", "gpu-a-0", "Running", "running", "1h"]
    assert second.split()[0] == "r50-1"
    assert header.index("NODE") == first.index("gpu-a-0") == second.index("gpu-a-1")


def test_long_messages_are_cut_in_tables():
    body = training({"conditions": [condition("Failed", "True", "Error", "x" * 500)]})
    line = next(ln for ln in render(body, [], NOW).splitlines() if ln.startswith("  Failed"))
    assert line.endswith("...") and len(line) < 200


def test_unscheduled_pod_and_terminating_pod():
    pending = pod(0, 0, None, phase="Pending", node=None)
    pending["status"]["conditions"] = [{"type": "PodScheduled", "status": "False",
                                        "reason": "Unschedulable"}]
    deleting = pod(1, 0, {"running": {}})
    deleting["metadata"]["deletionTimestamp"] = ago(-30)
    lines = render(training({"phase": "Pending"}), [pending, deleting], NOW).splitlines()
    rows = lines[lines.index("Pods (attempt 0)") + 2:]
    assert [row.split(None, 4) for row in rows] == [
        ["r50-0", "0", "-", "Pending", "unscheduled (Unschedulable)  1h"],
        ["r50-1", "1", "gpu-a-0", "Terminating", "running                      1h"]]


def test_restarting_shows_when_the_next_attempt_starts():
    body = training({"phase": "Restarting", "restartAt": ago(-20), "restarts": 1})
    phase = render(body, [], NOW).splitlines()[1]
    assert phase == "  Phase:        Restarting (next attempt in 20s)"


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize("argv, namespace, liveness", [
    pytest.param([], None, "http://0.0.0.0:8080/healthz", id="no-arguments"),
    pytest.param(["--liveness", ""], None, "", id="deployment-liveness-off"),
    pytest.param(["--namespace", "ml", "--verbose"], "ml", "http://0.0.0.0:8080/healthz",
                 id="one-namespace"),
])
def test_without_a_subcommand_the_operator_runs(argv, namespace, liveness, monkeypatch):
    args = cli.build_parser().parse_args(argv)
    assert (args.command, args.namespace, args.liveness) == (None, namespace, liveness)
    ran = []
    monkeypatch.setattr(cli, "run_operator", ran.append)
    cli.main(argv)
    assert [a.command for a in ran] == [None]


@pytest.mark.parametrize("argv, expected", [
    pytest.param(["status", "r50"], ("r50", None, False, 2.0), id="defaults"),
    pytest.param(["status", "r50", "-n", "ml", "--watch", "--interval", "0.5"],
                 ("r50", "ml", True, 0.5), id="watch"),
])
def test_status_arguments(argv, expected):
    args = cli.build_parser().parse_args(argv)
    assert args.command == "status"
    assert (args.name, args.namespace, args.watch, args.interval) == expected


def test_status_rejects_a_bad_interval(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["status", "r50", "--watch", "--interval", "0"])
    assert exc.value.code == 2
    assert "must be positive" in capsys.readouterr().err


class FakeCustom:
    def __init__(self, error=None, body=None):
        self.error, self.body = error, body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **_):
        assert (group, version, plural) == ("resnet50.dev", "v1alpha1", "resnet50trainings")
        if self.error:
            raise self.error
        return self.body


class FakeCore:
    def __init__(self, pods=()):
        self.pods = list(pods)

    def list_namespaced_pod(self, namespace, label_selector, **_):
        assert label_selector == "resnet50.dev/training=r50"
        from kubernetes.client import V1PodList
        return V1PodList(items=self.pods)


def test_fetch_of_a_missing_training_says_so_in_one_line():
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(StatusError) as exc:
        fetch(FakeCustom(ApiException(status=404, reason="Not Found")), FakeCore(), "ml", "r50")
    assert error_line(exc.value) == \
        "resnet50-operator: error: ResNet50Training ml/r50 not found"


def test_fetch_returns_pods_as_api_dicts():
    from kubernetes.client import V1ObjectMeta, V1Pod, V1PodSpec

    pods = [V1Pod(metadata=V1ObjectMeta(name="r50-0", labels={"resnet50.dev/attempt": "0"}),
                  spec=V1PodSpec(containers=[], node_name="gpu-a-0"))]
    body, got = fetch(FakeCustom(body=RUNNING), FakeCore(pods), "ml", "r50")
    assert body is RUNNING
    assert got == [{"metadata": {"name": "r50-0", "labels": {"resnet50.dev/attempt": "0"}},
                    "spec": {"containers": [], "nodeName": "gpu-a-0"}}]


def test_status_of_a_missing_training_exits_1_with_one_line(monkeypatch, capsys):
    from kubernetes.client.exceptions import ApiException

    missing = FakeCustom(ApiException(status=404, reason="Not Found"))
    monkeypatch.setattr(statusview, "connect", lambda: (missing, FakeCore(), "default"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["status", "r50"])
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "resnet50-operator: error: ResNet50Training default/r50 not found\n"


def test_status_prints_the_view(monkeypatch):
    monkeypatch.setattr(statusview, "connect", lambda: (FakeCustom(body=RUNNING), FakeCore(),
                                                        "default"))
    monkeypatch.setattr(statusview, "now_utc", lambda: NOW)
    out = io.StringIO()
    args = argparse.Namespace(name="r50", namespace="ml", watch=False, interval=2.0)
    assert statusview.command(args, out) == 0
    assert out.getvalue() == render(RUNNING, [], NOW)


def test_watch_refreshes_until_ctrl_c(monkeypatch):
    monkeypatch.setattr(statusview, "connect", lambda: (FakeCustom(body=RUNNING), FakeCore(),
                                                        "default"))
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(statusview.time, "sleep", sleep)
    out = io.StringIO()  # not a tty: a separator between screens, no escape codes
    args = argparse.Namespace(name="r50", namespace=None, watch=True, interval=0.5)
    assert statusview.command(args, out) == 0
    text = out.getvalue()
    assert sleeps == [0.5, 0.5, 0.5]
    assert text.count("Every 0.5s: resnet50-operator status r50 -n default") == 3
    assert text.count("-" * 72) == 2 and "\033[" not in text
