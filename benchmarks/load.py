"""The operator's load on the API server, read from the apiserver's audit log.

    python benchmarks/load.py                          # 1, 40, 200 idle trainings; 256 nodes
    python benchmarks/load.py --idle 2 --big-nodes 3 --window 10 --json runs/load-smoke.json

It starts its own control plane (devcluster.ControlPlane, with the CRD and an audit log of
every request at level Metadata) and four fake GPU nodes with room for 110 pods each, and
runs the operator as the Deployment runs it (`python -m resnet50_operator`, its default
settings, so a 5 s reconcile interval), except that RESNET50_OPERATOR_MAX_NODES and
MAX_GPUS_PER_TRAINING are raised for the big training (of 8-GPU pods) and that it has a
client certificate of its own (user resnet50-operator-bench, in system:masters): the audit
log tells its requests apart by that user, whatever client library (kubernetes, kopf's
aiohttp) sent them.

Scenarios, each in its own namespace with its own operator process (--namespace):
  idle N     N one-pod trainings. "Pending": their pods are created and bound to a node
             whose kubelet never runs them (the nodes have none). "Running": the harness,
             as a kubelet, then patches every pod's status to Running (no pod IP, so no
             progress reads).
  big N      one N-pod training: the burst from its creation until all pods exist and its
             status says so, its steady state Pending then Running, and its deletion
             (until the training and its pods are gone; the harness completes the pods'
             deletion as a kubelet would).
Each steady window opens once the scenario has settled (all pods created and bound, every
status written, then --settle seconds more) and lasts --window seconds; the harness sends
nothing meanwhile. Per window: the operator's requests (each audit ID once, by when the
apiserver received it) by verb and resource, its CPU time (utime+stime of /proc/PID/stat,
as % of one core) and its VmRSS and VmHWM (peak).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devcluster lives at the repository's root, not in a package

from kubernetes import client  # noqa: E402

from devcluster.controlplane import (  # noqa: E402
    ControlPlane,
    _openssl_cert,
    k8s_version,
    write_kubeconfig,
)
from devcluster.nodesim import kubelet_status  # noqa: E402
from resnet50_operator import crd  # noqa: E402
from resnet50_operator.spec import GROUP, PLURAL, VERSION  # noqa: E402

OPERATOR_USER = "resnet50-operator-bench"
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""
NODES, PODS_PER_NODE = 4, 110
GPUS = 8  # per pod
POLL = 0.5  # s between the harness's checks while it waits for a scenario to settle


# ------------------------------------------------------------------ measuring


class AuditLog:
    """The apiserver's audit log, read as it grows: each request once (a watch has two
    entries, ResponseStarted and ResponseComplete), at the time the apiserver received it."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.seen: set[str] = set()
        self.operator: list[tuple[float, str, str]] = []  # (time, "verb resource", userAgent)
        self.everyone: list[float] = []

    def read(self) -> None:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
            data = data[:data.rfind(b"\n") + 1]  # a line being written waits for next time
            self.offset += len(data)
        for line in data.splitlines():
            e = json.loads(line)
            if e["auditID"] in self.seen:
                continue
            self.seen.add(e["auditID"])
            at = datetime.datetime.fromisoformat(e["requestReceivedTimestamp"]).timestamp()
            self.everyone.append(at)
            if e["user"].get("username") == OPERATOR_USER:
                self.operator.append((at, f"{e['verb']} {resource(e)}", e.get("userAgent", "")))

    def between(self, t0: float, t1: float) -> tuple[list[tuple[float, str, str]], int]:
        """The operator's requests received in [t0, t1), and everyone's count."""
        time.sleep(1.0)  # an entry is written when its response is complete
        self.read()
        return ([r for r in self.operator if t0 <= r[0] < t1],
                sum(t0 <= t < t1 for t in self.everyone))


def resource(entry: dict[str, Any]) -> str:
    """pods, resnet50trainings/status, ...; the path for discovery (/apis/...). A list or
    watch says which selectors it had (pods?labelSelector): a namespace-wide read differs
    from a selected one."""
    path, _, query = entry["requestURI"].partition("?")
    ref = entry.get("objectRef")
    if not ref:
        return path
    selectors = [s for s in ("labelSelector", "fieldSelector") if s + "=" in query]
    return ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "") + (
        "?" + "&".join(selectors) if selectors else "")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def memory_mib(pid: int) -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if line.startswith("Vm"))
    return {k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


# ------------------------------------------------------------------ the cluster


class Bench:
    """The control plane, its audit log and the harness's clients."""

    def __init__(self, cp: ControlPlane, audit: AuditLog, tmp: Path) -> None:
        self.cp, self.audit, self.tmp = cp, audit, tmp
        api = cp.api_client()
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        assert cp.workdir is not None and cp.server is not None
        pki = cp.workdir / "pki"
        _openssl_cert(pki, OPERATOR_USER, OPERATOR_USER, org="system:masters", ca="ca",
                      client=True)
        self.kubeconfig = tmp / "operator.kubeconfig"
        write_kubeconfig(self.kubeconfig, cp.server, pki, OPERATOR_USER, "bench")

    def start_operator(self, namespace: str, max_nodes: int) -> subprocess.Popen:
        """The operator with its defaults; it is ready once it watches trainings and pods."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET50_OPERATOR_")}
        env.update(KUBECONFIG=str(self.kubeconfig),
                   RESNET50_OPERATOR_MAX_NODES=str(max(max_nodes, 64)),
                   RESNET50_OPERATOR_MAX_GPUS_PER_TRAINING=str(max(max_nodes * GPUS, 512)))
        log = open(self.tmp / f"operator-{namespace}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "resnet50_operator", "--liveness", "", "--namespace",
             namespace], env=env, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.time()

        def watching() -> bool:
            assert proc.poll() is None, self.operator_log(namespace)
            self.audit.read()
            watched = {what.split("?")[0] for at, what, _ in self.audit.operator if at >= t0}
            return {f"watch {PLURAL}", "watch pods"} <= watched

        self.wait("the operator's watches", watching, 120)
        return proc

    def operator_log(self, namespace: str) -> str:
        return (self.tmp / f"operator-{namespace}.log").read_text()[-3000:]

    @staticmethod
    def wait(what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
            time.sleep(POLL)

    def create_trainings(self, namespace: str, count: int, nodes: int) -> None:
        for i in range(count):
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ResNet50Training",
                "metadata": {"name": f"t{i:03d}"},
                "spec": {"nodes": nodes, "gpusPerNode": GPUS, "dataset": {"synthetic": True}}})

    def settled(self, namespace: str, phase: str, pods: int) -> Callable[[], bool]:
        """Every pod created and bound, every training's status in `phase` saying so."""
        def check() -> bool:
            listed = self.core.list_namespaced_pod(namespace).items
            if len(listed) != pods or not all(p.spec.node_name for p in listed):
                return False
            items = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL)["items"]
            statuses = [t.get("status") or {} for t in items]
            failed = [s for s in statuses if s.get("phase") == "Failed"]
            assert not failed, f"a training failed: {failed[0]}"
            return all(s.get("phase") == phase and s.get("podsCreated") and (
                phase != "Running" or s["nodes"]["ready"] == s["nodes"]["total"])
                for s in statuses)
        return check

    def run_pods(self, namespace: str) -> None:
        """What a kubelet writes once the containers run."""
        started = {"running": {"startedAt": datetime.datetime.now(datetime.timezone.utc)
                               .strftime("%Y-%m-%dT%H:%M:%SZ")}}
        for pod in self.core.list_namespaced_pod(namespace).items:
            self.core.patch_namespaced_pod_status(pod.metadata.name, namespace, {
                "status": kubelet_status("Running", started, True)})

    def finalize_deleted_pods(self, namespace: str) -> int:
        """Delete Terminating pods for good, as their kubelet would; how many pods are left."""
        pods = self.core.list_namespaced_pod(namespace).items
        for pod in pods:
            if pod.metadata.deletion_timestamp:
                with contextlib.suppress(client.ApiException):
                    self.core.delete_namespaced_pod(pod.metadata.name, namespace,
                                                    grace_period_seconds=0)
        return len(pods)

    def teardown(self, namespace: str, operator: subprocess.Popen) -> None:
        operator.terminate()
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        # Bound pods without a kubelet stay Terminating unless deleted with grace period 0.
        self.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        self.core.delete_namespace(namespace)

        def gone() -> bool:
            try:
                self.core.read_namespace(namespace)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        self.wait(f"namespace {namespace} deleted", gone, 180)


def measure(bench: Bench, pid: int, row: dict[str, Any], *, seconds: float | None = None,
            start: Callable[[], Any] | None = None, until: Callable[[], bool] | None = None,
            timeout: float = 600) -> dict[str, Any]:
    """The operator's requests, CPU and memory over `seconds`, or from `start()` until
    `until()`."""
    t0, cpu0 = time.time(), cpu_seconds(pid)
    if start is not None:
        start()
    if until is None:
        time.sleep(seconds or 0)
    else:
        bench.wait(row["load"], until, timeout)
    t1, cpu1 = time.time(), cpu_seconds(pid)
    mem = memory_mib(pid)
    requests, everyone = bench.audit.between(t0, t1)
    span = t1 - t0
    by_request = collections.Counter(what for _, what, _ in requests)
    row.update(
        seconds=round(span, 1), requests=len(requests),
        requests_per_second=round(len(requests) / span, 2),
        per_training_per_second=round(len(requests) / span / row["trainings"], 3),
        by_request=dict(by_request.most_common()),  # counts
        user_agents=sorted({ua for _, _, ua in requests}),
        apiserver_requests_per_second=round(everyone / span, 1),
        cpu_percent=round(100 * (cpu1 - cpu0) / span, 1),
        rss_mib=round(mem["VmRSS"], 1), peak_rss_mib=round(mem["VmHWM"], 1))
    print(format_table([row], header=False), flush=True)
    return row


# ------------------------------------------------------------------ scenarios


def idle(bench: Bench, count: int, window: float, settle: float) -> list[dict[str, Any]]:
    namespace = f"idle-{count}"
    bench.cp.create_namespace(namespace)
    operator = bench.start_operator(namespace, 1)
    rows = []
    try:
        bench.create_trainings(namespace, count, 1)
        for phase in ("Pending", "Running"):
            if phase == "Running":
                bench.run_pods(namespace)
            bench.wait(f"{count} trainings {phase}", bench.settled(namespace, phase, count),
                       300 + count)
            time.sleep(settle)
            rows.append(measure(bench, operator.pid, {
                "load": f"{count} idle, {phase}", "scenario": "idle", "phase": phase,
                "trainings": count, "pods": count}, seconds=window))
    finally:
        bench.teardown(namespace, operator)
    return rows


def big(bench: Bench, nodes: int, window: float, settle: float) -> list[dict[str, Any]]:
    namespace = f"big-{nodes}"
    bench.cp.create_namespace(namespace)
    operator = bench.start_operator(namespace, nodes)
    base = {"scenario": "big", "trainings": 1, "pods": nodes}
    rows = []
    try:
        rows.append(measure(bench, operator.pid, {
            **base, "load": f"{nodes}-node training: creating its pods", "phase": "create"},
            start=lambda: bench.create_trainings(namespace, 1, nodes),
            until=bench.settled(namespace, "Pending", nodes)))
        for phase in ("Pending", "Running"):
            if phase == "Running":
                bench.run_pods(namespace)
                bench.wait(f"{nodes} pods Running", bench.settled(namespace, phase, nodes), 300)
            time.sleep(settle)
            rows.append(measure(bench, operator.pid, {
                **base, "load": f"{nodes}-node training, {phase}", "phase": phase},
                seconds=window))
        def deleted() -> bool:
            left = bench.finalize_deleted_pods(namespace)
            return left == 0 and not bench.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL)["items"]

        rows.append(measure(bench, operator.pid, {
            **base, "load": f"{nodes}-node training: deleting it", "phase": "delete"},
            start=lambda: bench.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "t000"),
            until=deleted))
    finally:
        bench.teardown(namespace, operator)
    return rows


# ------------------------------------------------------------------ report


def format_table(rows: Sequence[dict[str, Any]], header: bool = True, top: int = 4) -> str:
    lines = ["| Load | Pods | Window (s) | Operator req/s | req/s per training | "
             "Where they go (req/s) | CPU (% of a core) | RSS / peak (MiB) |",
             "|---|---:|---:|---:|---:|---|---:|---:|"] if header else []
    for r in rows:
        where = ", ".join(f"{k} {round(n / r['seconds'], 2):g}"
                          for k, n in list(r["by_request"].items())[:top])
        more = len(r["by_request"]) - top
        where += f", {more} more" if more > 0 else ""
        lines.append(f"| {r['load']} | {r['pods']} | {r['seconds']:g} | "
                     f"{r['requests_per_second']:g} | {r['per_training_per_second']:g} | "
                     f"{where or '-'} | {r['cpu_percent']:g} | "
                     f"{r['rss_mib']:.0f} / {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kubernetes": k8s_version()}


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)"
                                                    if git("status", "--porcelain") else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--idle", type=int, nargs="*", default=[1, 40, 200], metavar="N",
                   help="numbers of idle one-pod trainings, one scenario each (1 40 200)")
    p.add_argument("--big-nodes", type=int, default=256, metavar="N",
                   help="pods of the one big training (256; 0: none)")
    p.add_argument("--window", type=float, default=60, help="seconds per steady window (60)")
    p.add_argument("--settle", type=float, default=10, help="seconds to wait once a "
                   "scenario has settled, before its window opens (10: two reconcile passes)")
    p.add_argument("--json", type=Path, default=Path("runs/load.json"), metavar="OUT",
                   help="where to write the report (runs/load.json)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if max(args.idle + [args.big_nodes]) > NODES * PODS_PER_NODE:
        raise SystemExit(f"at most {NODES * PODS_PER_NODE} pods fit on the fake nodes")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="resnet50-load-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "audit-policy.yaml").write_text(AUDIT_POLICY)
        audit = AuditLog(tmp / "audit.log")
        with ControlPlane(node_monitor_grace_period="1h", crds=[crd.build_crd()],
                          apiserver_args=[f"--audit-policy-file={tmp / 'audit-policy.yaml'}",
                                          f"--audit-log-path={audit.path}",
                                          "--audit-log-mode=blocking"]) as cp:
            for i in range(NODES):
                # Room for every pod of a scenario: their GPUs are never used.
                cp.add_node(f"gpu-node-{i}", gpus=GPUS * PODS_PER_NODE, pods=PODS_PER_NODE)
            bench = Bench(cp, audit, tmp)
            print(format_table([]), flush=True)
            for count in args.idle:
                rows += idle(bench, count, args.window, args.settle)
            if args.big_nodes:
                rows += big(bench, args.big_nodes, args.window, args.settle)
    report = {
        "benchmark": "resnet50-operator API load",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/load.py", *argv]),
        "revision": git_revision(), "machine": machine(),
        "settings": {"idle": args.idle, "big_nodes": args.big_nodes, "window": args.window,
                     "settle": args.settle, "operator_user": OPERATOR_USER},
        "rows": rows,
    }
    print("\n" + format_table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
