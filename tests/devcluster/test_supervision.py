"""The control plane restarts a process that exits: in a Python process (a thread of
ControlPlane) and under the command line's `start` (its supervisor process)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import wait_for
from kubernetes import client, config

from devcluster import controlplane
from devcluster.controlplane import ControlPlane, binaries_available

ROOT = Path(__file__).parents[2]


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def needs_binaries() -> None:
    reason = binaries_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def quietly(read):  # while a process is down the API may fail: not yet, rather than an error
    try:
        return read()
    except Exception:
        return None


def restarted(plane: ControlPlane, name: str, old: int) -> int | None:
    pid = plane.pids()[name]
    return pid if pid != old and running(pid) else None


def kill_and_wait_for_restart(plane: ControlPlane, name: str) -> int:
    """SIGKILL the process `name`; the pid of the one started in its place."""
    old = plane.pids()[name]
    os.kill(old, signal.SIGKILL)
    return wait_for(f"a new {name}", lambda: restarted(plane, name, old))


def test_the_back_off_doubles_to_its_ceiling_and_starts_over(tmp_path, monkeypatch):
    monkeypatch.setattr(controlplane, "RESTART_DELAY_MIN", 0.05)
    monkeypatch.setattr(controlplane, "RESTART_DELAY_MAX", 0.2)
    monkeypatch.setattr(controlplane, "RESTART_RESET", 0.3)
    flag, log = tmp_path / "run-long", tmp_path / "quitter.log"
    # Exits at once (code 3) until the flag exists, then after 0.5 s: longer than RESET.
    proc = controlplane._Process(
        "quitter", ["sh", "-c", f"[ -e {flag} ] && sleep 0.5; exit 3"], log, detach=True)
    try:
        wait_for("4 quick restarts", lambda: proc.supervise() and proc.restarts >= 4,
                 timeout=10, interval=0.01)
        flag.touch()
        wait_for("2 more restarts", lambda: proc.supervise() and proc.restarts >= 6,
                 timeout=10, interval=0.01)
    finally:
        proc.stop()
    notes = [line for line in log.read_text().splitlines() if line.startswith("devcluster:")]
    assert notes[0].startswith("devcluster: quitter exited with code 3 after ")
    runs = [re.search(r"after ([\d.]+)s; restarted after ([\d.]+)s \(restart (\d)\)", n).groups()
            for n in notes]
    expected, delays = None, []
    for ran, delay, count in runs:  # which run was long depends on when the flag came
        expected = 0.05 if expected is None or float(ran) >= 0.3 else min(expected * 2, 0.2)
        delays.append(float(delay))
        assert (float(delay), int(count)) == (pytest.approx(expected), len(delays))
    assert delays[:4] == [0.05, 0.1, 0.2, 0.2]  # doubling, up to the ceiling
    assert delays[-1] == 0.05  # after a long run: from the start


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    needs_binaries()
    with ControlPlane() as cp:
        cp.add_node("node-0", gpus=0)
        yield cp


@pytest.mark.cluster
def test_a_killed_scheduler_is_restarted_and_schedules_pods(plane):
    kill_and_wait_for_restart(plane, "kube-scheduler")

    core = client.CoreV1Api(plane.api_client())
    core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="after-the-restart"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="none")])))
    # The new scheduler leads once the old one's Lease has expired (15 s).
    node = wait_for("the pod to be scheduled", lambda: core.read_namespaced_pod(
        "after-the-restart", "default").spec.node_name, timeout=120)
    assert node == "node-0"
    log = (plane.workdir / "logs" / "kube-scheduler.log").read_text()
    assert "devcluster: kube-scheduler exited with code -9 (signal 9) after " in log
    assert "restarted after 1s (restart 1)" in log


@pytest.mark.cluster
def test_a_killed_etcd_is_restarted_with_its_data(plane):
    plane.create_namespace("before-the-restart")
    new = kill_and_wait_for_restart(plane, "etcd")

    core = client.CoreV1Api(plane.api_client())
    wait_for("the namespace read back", lambda: quietly(
        lambda: core.read_namespace("before-the-restart")), timeout=60)
    data_dir = next(a.split("=", 1)[1] for a in
                    Path(f"/proc/{new}/cmdline").read_bytes().decode().split("\0")
                    if a.startswith("--data-dir="))
    owner = Path(data_dir).parent / "owner"  # in /dev/shm: what a later start may sweep
    if owner.exists():
        assert owner.read_text().split()[0] == str(new)


@pytest.mark.cluster
def test_a_killed_apiserver_is_restarted(plane):
    kill_and_wait_for_restart(plane, "kube-apiserver")
    core = client.CoreV1Api(plane.api_client())
    wait_for("the API to answer", lambda: quietly(lambda: core.list_namespace().items),
             timeout=90)


@pytest.mark.cluster
def test_the_command_lines_supervisor_restarts_and_stop_leaves_nothing(tmp_path):
    needs_binaries()
    d = tmp_path / "control-plane"
    state_file = d / controlplane.STATE_FILE

    def cli(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "devcluster", "controlplane", command, "--dir", str(d)],
            cwd=ROOT, capture_output=True, text=True, timeout=300)

    def scheduler() -> dict:
        state = json.loads(state_file.read_text())
        return next(p for p in state["processes"] if p["name"] == "kube-scheduler")

    started = cli("start")
    assert started.returncode == 0, started.stderr
    seen: set[int] = set()  # every pid of it, for the end
    try:
        state = json.loads(state_file.read_text())
        supervisor = state["supervisor"]["pid"]
        seen |= {supervisor, *(p["pid"] for p in state["processes"])}
        assert running(supervisor)
        leases = client.CoordinationV1Api(
            config.new_client_from_config(config_file=started.stdout.strip()))

        def leader() -> str | None:
            return quietly(lambda: leases.read_namespaced_lease(
                "kube-scheduler", "kube-system").spec.holder_identity)

        first = wait_for("a scheduler leading", leader)
        old = scheduler()["pid"]
        os.kill(old, signal.SIGKILL)
        new = wait_for("a new kube-scheduler in the state file", lambda: (
            p := scheduler())["pid"] != old and running(p["pid"]) and p["pid"])
        seen.add(new)
        wait_for("the new scheduler leading", lambda: (who := leader()) and who != first,
                 timeout=120)
        log = (d / "logs" / "kube-scheduler.log").read_text()
        assert "devcluster: kube-scheduler exited with code -9 (signal 9)" in log
        assert "kube-scheduler exited" in (d / "logs" / "supervisor.log").read_text()
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the supervisor and its processes" in stopped.stderr.splitlines()[0]
    assert not d.exists()
    assert [pid for pid in seen if running(pid)] == []
    assert cli("stop").returncode == 0  # nothing left to stop: still fine
