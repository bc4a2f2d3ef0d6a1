"""The `node` tier: a real kubelet with containerd and runc, kube-proxy, CoreDNS and the
operator running in the cluster from manifests/operator with only its RBAC, all brought up
by hack/real-node.sh (which builds what is missing: see docs/real-node.md).

It needs root (containerd, the kubelet, iptables). Without root it is skipped, except under
CI, where a skip would hide a broken tier: there it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kube import ROOT
from kubernetes import client, config

SCRIPT = ROOT / "hack" / "real-node.sh"
# Its own state directory: a node left by a killed test session is taken down first, and a
# node that a developer started (the script's default directory) is never touched.
STATE = Path("/tmp/resnet50-real-node-tests")
UP_TIMEOUT = 3600  # a cold machine builds Kubernetes, CoreDNS and the images first


@dataclass
class RealNode:
    kubeconfig: Path
    state: Path
    log: Path
    bin_dir: str  # kubectl of the node's release

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess:
        run = subprocess.run(["kubectl", *args], capture_output=True, text=True,
                             timeout=timeout, input=input, env=self.env)
        if check and run.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {run.stderr.strip()}")
        return run

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin_dir}:{os.environ['PATH']}"}

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def ctr(self, *args: str) -> str:
        return subprocess.run(
            ["ctr", "--address", str(self.state / "containerd.sock"), "--namespace", "k8s.io",
             *args], capture_output=True, text=True, check=True, timeout=60).stdout


def _script(command: str, log: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REAL_NODE_DIR": str(STATE)}
    with open(log, "a") as out:
        return subprocess.run(["bash", str(SCRIPT), command], env=env, stdout=subprocess.PIPE,
                              stderr=out, text=True, timeout=UP_TIMEOUT)


@pytest.fixture(scope="session")
def real_node(tmp_path_factory) -> Iterator[RealNode]:
    if os.geteuid() != 0:
        reason = "the real node needs root (containerd, the kubelet, iptables)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("real-node") / "real-node.log"
    _script("down", log)  # what a killed session left
    up = _script("up", log)
    if up.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        _script("down", log)  # what it started before it failed
        pytest.fail(f"hack/real-node.sh up failed ({up.returncode}):\n{tail}")
    bin_dir = subprocess.run([sys.executable, "-m", "devcluster", "controlplane", "bin-dir"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    node = RealNode(kubeconfig=STATE / "control-plane" / "kubeconfig", state=STATE, log=log,
                    bin_dir=bin_dir)
    yield node
    down = _script("down", log)
    assert down.returncode == 0, f"hack/real-node.sh down failed; see {log}"


@pytest.fixture
def namespace(real_node: RealNode) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    real_node.kubectl("create", "namespace", name)
    yield name
    real_node.kubectl("delete", "namespace", name, "--wait=false", check=False)
